"""NCA (pairwise): Noise Contrastive Alignment with binary preferences.

Paper: Chen, Zhang, Huang, Lu, Xu, Zhu, "Noise Contrastive Alignment of
Language Models with Explicit Rewards", NeurIPS 2024, arXiv:2402.05369
(section 4, the NCA loss for K = 2 responses with preference labels).

NCA scores each response on its own against the reference (an "absolute"
likelihood objective, not only the margin). With the implicit rewards
r_w = β h_θ(y_w), r_l = β h_θ(y_l), h_θ = Σ_t log π_θ − log π_ref,

    L = −log σ(r_w) − ½ log σ(−r_w) − ½ log σ(−r_l)

Unlike DPO, the loss is not a function of r_w − r_l alone: adding the same
amount to both rewards changes it, and −log σ(r_w) − ½ log σ(−r_w) keeps
the chosen reward from running off to +∞ (its minimum over r_w is at
r_w = log 2), while the rejected reward is pushed down. This prevents the
decreasing chosen likelihood seen with DPO.

Equivalents: TRL `DPOTrainer(loss_type="nca_pair")`. Verified against TRL
1.16 `trl/trainer/dpo_trainer.py` (`nca_pair` branch, parity test) and the
paper's pairwise NCA objective.
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
    """Mean over decided pairs of −log σ(r_w) − ½ log σ(−r_w) − ½ log σ(−r_l)."""
    scores = ops.pair_scores(stats, rollout)
    r_w, r_l = cfg.beta * scores.chosen, cfg.beta * scores.rejected
    per_pair = -jax.nn.log_sigmoid(r_w) - 0.5 * jax.nn.log_sigmoid(-r_w) - 0.5 * jax.nn.log_sigmoid(-r_l)
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta)


register(Algorithm(
    name="nca_pair",
    family="preference",
    paper="Noise Contrastive Alignment of Language Models with Explicit Rewards (Chen et al., 2024, arXiv:2402.05369)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs"}),
    pairwise=True,
    prepare=pair_groups,
))
