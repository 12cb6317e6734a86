"""GDPO: Group reward-Decoupled Normalization Policy Optimization.

Paper: Shih-Yang Liu, Xin Dong, Ximing Lu et al. (NVIDIA), "GDPO: Group
reward-Decoupled Normalization Policy Optimization for Multi-reward RL
Optimization", 2026, arXiv:2601.05242. Code: https://github.com/NVlabs/GDPO.

With C reward signals r_{i,1..C} per response (`Rollout.reward_components`),
GRPO sums them first and normalises the sum, so different reward
combinations with the same sum collapse to the same advantage. GDPO
normalises each reward within the group first, then sums, then whitens over
the batch:

    A_{i,k} = (r_{i,k} − mean_g r_k) / (std_g r_k + ε_std)        per component k, within the group
    S_i     = Σ_k w_k A_{i,k}
    Â_{i,t} = (S_i − mean_B S) / sqrt(var_B S + ε)                batch whitening

and the loss is GRPO's clipped surrogate on Â (official verl run: ε = 0.2,
no KL loss, verl's token-mean aggregation of that version). This file is
the estimator only: `get_algorithm("gdpo")` pairs it with `grpo`'s loss at
`kl_coef` = 0 and aggregation token-mean.

Batch whitening: the official verl implementation whitens the advantage
over all trained tokens of the batch (`masked_whiten(adv, response_mask)`,
so long responses weigh more in the mean and variance); TRL's
`multi_objective_aggregation="normalize_then_sum"` whitens over responses.
`whiten="tokens"` (default) follows the official code, `"rows"` TRL, `"none"`
skips the step. (verl's variance is the unbiased one; `ops.masked_whiten`
uses the biased one, a factor N/(N − 1) on the variance over N tokens.)

Reduction to GRPO (tested): with one component (C = 1, w = 1) and
`whiten="none"`, Â is GRPO's advantage of r_1 and the loss and gradient are
GRPO's (`kl_coef` = 0, same clip and aggregation). With whitening, Â = (A − m)/s for
the token-level mean m and std s of GRPO's advantages A over the batch: the
same direction per row up to that batch-wide affine map. Note m ≠ 0 in
general because the token-level mean weighs rows by their length.

Invariants: each A_{i,k} is invariant to a positive affine map of component
k within a group; all-equal groups give A_{i,k} = 0 for every k, hence
S_i = 0 (but whitening then shifts them to −m/s; with `whiten="none"` they
stay 0). `rewards` is not read: the components are the rewards.

Equivalents: verl `algorithm.adv_estimator=gdpo` (`algorithm.gdpo_reward_keys`);
TRL `GRPOTrainer(multi_objective_aggregation="normalize_then_sum",
reward_weights=...)` (with beta > 0 see GRPO's note on TRL's default KL
weighting, `kl_importance_weighted`).

Verified against: `NVlabs/GDPO` `verl-GDPO/verl/trainer/ppo/ray_trainer.py`
(`compute_advantage`, branch `gdpo`: per-reward `compute_grpo_outcome_advantage`,
sum, `masked_whiten`), `verl-GDPO/train_gdpo.sh`, and TRL 1.16
`grpo_trainer.py` (`normalize_then_sum`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd):
    component_weights: tuple[float, ...] | None = None
    """w_k, one per column of `reward_components` (None: all 1, as in the official run)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std (1: unbiased, as in verl and TRL)."""
    whiten: Literal["tokens", "rows", "none"] = "tokens"
    """Batch whitening of the summed advantage: over trained tokens (official
    verl code), over responses (TRL), or none."""
    whiten_eps: float = pieces.setting(1e-8, ge=0.0)
    """ε added to the batch variance before the square root."""


def decoupled_sum(rollout, cfg: Config):
    """[B]: S_i = Σ_k w_k (r_{i,k} − mean_g r_k) / (std_g r_k + ε_std)."""
    components = rollout.reward_components
    count = components.shape[1]
    weights = (1.0,) * count if cfg.component_weights is None else cfg.component_weights
    if len(weights) != count:
        raise ValueError(f"gdpo: {len(weights)} component_weights for {count} reward components")
    return sum(
        w * ops.group_zscore(components[:, k], rollout.group_size, cfg.std_eps, cfg.std_ddof)
        for k, w in enumerate(weights)
    )


def advantages(rollout, cfg: Config, state):
    """Â: per-component group z-scores, weighted sum, then batch whitening."""
    if cfg.whiten not in ("tokens", "rows", "none"):
        raise ValueError(f"gdpo: unknown whiten {cfg.whiten!r}; choose tokens, rows or none")
    per_row = decoupled_sum(rollout, cfg)
    if cfg.whiten == "rows":
        per_row = ops.masked_whiten(per_row, rollout.sample_weight, cfg.whiten_eps)
    adv = ops.broadcast_to_tokens(per_row, rollout)
    if cfg.whiten == "tokens":
        adv = ops.masked_whiten(adv, ops.weighted_mask(rollout), cfg.whiten_eps)
    return adv, state


register(Algorithm(
    name="gdpo",
    family="advantage",
    paper="GDPO: Group reward-Decoupled Normalization Policy Optimization for Multi-reward RL Optimization (Liu et al., 2026, arXiv:2601.05242)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.0, "aggregation": "token-mean"},
    needs=frozenset({"reward_components"}),
))
