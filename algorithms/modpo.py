"""MODPO: Multi-Objective Direct Preference Optimization.

Paper: Zhou, Liu, Shao, Yue, Yang, Ouyang, Qiao, "Beyond One-Preference-
Fits-All Alignment: Multi-Objective Direct Preference Optimization",
Findings of ACL 2024, arXiv:2310.03708 (section 3, eq. 7).

To train the language model that optimises the weighted sum w·r of several
rewards, MODPO trains on the preference data of one objective k (the pair's
chosen row, from `rewards`) and lets the other objectives' reward models
enter as a margin:

    z = (1/w_k) [ β Δ − Σ_{j≠k} w_j (r_j(y_w) − r_j(y_l)) ]
    L = −log σ(z)

with Δ = h_θ(y_w) − h_θ(y_l), h_θ = Σ_t log π_θ − log π_ref, and r_j the
other objectives' rewards of each response (`reward_components[:, j]`, e.g.
a margin reward model's score or an implicit DPO reward β log π_φ/π_ref).
Sweeping w traces a Pareto front without RL. w_k = 1 with zero component
weights is DPO; the margin term vanishes when the other rewards are equal
for both responses.

Defaults: β = 0.1 and w = (½, ½) over (preference, one margin reward), the
official scripts' two-objective setting; with C components and
`component_weights=None` the remaining weight 1 − w_k is split evenly.
Equivalent: ZHZisZZ/modpo `MODPOTrainer.modpo_loss` (sigmoid). Verified
against ZHZisZZ/modpo `src/trainer/modpo_trainer.py`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    beta: float = pieces.setting(0.1, gt=0.0)
    """β: inverse temperature of the implicit reward."""
    preference_weight: float = pieces.setting(0.5, gt=0.0)
    """w_k > 0: weight of the objective whose preferences label the pairs."""
    component_weights: tuple[float, ...] | None = None
    """w_j of the C reward components (None: (1 − w_k)/C each)."""


def component_margin(rollout, cfg: Config, sign):
    """[G]: Σ_j w_j (r_j(y_w) − r_j(y_l)) over the reward components."""
    components = rollout.reward_components.astype(jnp.float32)
    count = components.shape[1]
    if cfg.component_weights is None:
        weights = jnp.full((count,), (1.0 - cfg.preference_weight) / count, jnp.float32)
    elif len(cfg.component_weights) != count:
        raise ValueError(
            f"modpo: {len(cfg.component_weights)} component_weights for {count} reward_components"
        )
    else:
        weights = jnp.asarray(cfg.component_weights, jnp.float32)
    return ops.pair_margin(components @ weights, sign)


def loss(stats, rollout, adv, cfg: Config, state):
    """Mean over decided pairs of −log σ((βΔ − w·Δr) / w_k)."""
    scores = ops.pair_scores(stats, rollout)
    margin = component_margin(rollout, cfg, scores.sign)
    z = (cfg.beta * scores.margin - margin) / cfg.preference_weight
    per_pair = ops.logistic_pair_loss(z)
    weight = jnp.maximum(jnp.sum(scores.weight), 1.0)
    extra = {"component_margin": jnp.sum(scores.weight * margin) / weight}
    return ops.preference_loss(per_pair, scores, stats, rollout, cfg.beta, extra)


register(Algorithm(
    name="modpo",
    family="preference",
    paper="Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference Optimization (Zhou et al., 2023, arXiv:2310.03708)",
    Config=Config,
    advantages=ops.pair_sign_targets,
    loss=loss,
    needs=frozenset({"ref_logprobs", "reward_components"}),
    pairwise=True,
    prepare=pair_groups,
))
