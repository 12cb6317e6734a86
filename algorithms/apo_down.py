"""APO-down: Anchored Preference Optimization, "chosen is worse than the model".

Paper: D'Oosterlinck, Xu, Develder, Demeester, Singh, Potts, Kiela, Mehri,
"Anchored Preference Optimization and Contrastive Revisions: Addressing
Underspecification in Alignment", 2024, arXiv:2408.06266 (section 3, eq. 8).

With implicit rewards r = β h_θ(y), h_θ = Σ_t log π_θ − log π_ref,

    L = σ(r_w) + (1 − σ(r_w − r_l))

lowers the chosen likelihood while still raising the chosen-over-rejected
margin (so the rejected likelihood falls faster) — the signal when both
responses are worse than what the model already produces. The sibling
`apo_zero` (eq. 7) anchors the other way. Bounded in [0, 2].

Equivalents: TRL `DPOTrainer(loss_type="apo_down")`. Verified against the
paper's eq. 8 and TRL 1.16 `trl/trainer/dpo_trainer.py` (`apo_down` branch,
parity test).
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
    """Mean over decided pairs of σ(r_w) + (1 − σ(r_w − r_l))."""
    scores = ops.pair_scores(stats, rollout)
    per_pair = jax.nn.sigmoid(cfg.beta * scores.chosen) + jax.nn.sigmoid(-cfg.beta * scores.margin)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="apo_down",
    family="preference",
    paper="Anchored Preference Optimization and Contrastive Revisions (D'Oosterlinck et al., 2024, arXiv:2408.06266)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
