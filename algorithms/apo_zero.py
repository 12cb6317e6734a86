"""APO-zero: Anchored Preference Optimization, "chosen is better than the model".

Paper: D'Oosterlinck, Xu, Develder, Demeester, Singh, Potts, Kiela, Mehri,
"Anchored Preference Optimization and Contrastive Revisions: Addressing
Underspecification in Alignment", 2024, arXiv:2408.06266 (section 3, eq. 7).

Each response's implicit reward r = β h_θ(y), h_θ = Σ_t log π_θ − log π_ref,
is anchored separately, not only through the margin:

    L = (1 − σ(r_w)) + σ(r_l)

which raises the chosen likelihood and lowers the rejected one — the right
signal when the chosen outputs are better than what the model already
produces. The sibling `apo_down` (eq. 8) is for chosen outputs worse than the
model's. Unlike DPO the loss is bounded (in [0, 2]) and depends on r_w and
r_l individually.

Equivalents: TRL `DPOTrainer(loss_type="apo_zero")` (KTO's
`apo_zero_unpaired` is the unpaired form). Verified against the paper's
eq. 7 and TRL 1.16 `trl/trainer/dpo_trainer.py` (`apo_zero` branch, parity test).
"""

from __future__ import annotations

import dataclasses

import jax

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward (TRL default 0.1)."""


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of (1 − σ(r_w)) + σ(r_l)."""
    scores = ops.pair_scores(stats, rollout)
    per_pair = jax.nn.sigmoid(-cfg.beta * scores.chosen) + jax.nn.sigmoid(cfg.beta * scores.rejected)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="apo_zero",
    family="preference",
    paper="Anchored Preference Optimization and Contrastive Revisions (D'Oosterlinck et al., 2024, arXiv:2408.06266)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
