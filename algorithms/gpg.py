"""GPG: Group Policy Gradient.

Paper: Chu et al., "GPG: A Simple and Strong Reinforcement Learning Baseline
for Model Reasoning", 2025, arXiv:2504.02546 (ICLR 2026).

The plain policy-gradient objective (no ratio, no clipping, no critic, no
reference model, no KL) with a group-mean baseline and a batch-level
correction of the gradient scale:

    Â_i  = α (R_i − mean_g R) / F_norm
    α    = min(B / (B − M), α_max)   (accurate gradient estimation, AGE; α_max = 20)
    J(θ) = 1/Σ_i|o_i| Σ_i Σ_t Â_i log π_θ(o_{i,t} | q, o_{i,<t})

B is the number of responses in the batch and M the number of "invalid"
ones, whose group has all-equal rewards and so zero advantage: they add
nothing to the gradient but still count in the 1/Σ|o| average, and α
restores the scale of the valid ones. The official code divides the loss
by max((B − M)/B, 0.05), so α never exceeds 20 when almost every group is
all-equal. F_norm = 1 in the paper's main setting (F_norm = std_g R + 10⁻⁴ is
an ablation, `std_normalise`). The paper's threshold
β_th (re-sample when the valid fraction falls below it) is a sampling-loop
control, not part of the loss.

Here B and M are counted with the sample weights (B = Σ_i w_i), over the
batch passed to `advantages`, so the trainer must call it on the whole
minibatch before splitting into microbatches (as for every algorithm).

Deviation of verl: verl's `compute_gpg_outcome_advantage` sets
α = B / count_nonzero(R) (responses with a non-zero reward), which equals
B / (B − M) only in special cases (e.g. every group mixed and rewards
never 0). This file follows the paper's definition of M.

Closest relative: REINFORCE with the group-mean baseline (`reinforce`); with
AGE off (α = 1) and token-mean aggregation GPG is exactly that.

Equivalents: verl `adv_estimator=gpg`, `loss_mode=gpg` (loss −Â log π with
`loss_agg_mode`, default token-mean). No TRL equivalent.

Verified against: the paper's AGE definition (README of AMAP-ML/GPG:
"F_norm = 1, α = B/(B−M)"); the authors' trainer, undyingjoker/GPG_OPENRS
`open-r1/src/open_r1/gpg_trainer.py` (a GPG author's copy of the official
open-r1 code): `compute_loss` takes −Â log π per token and averages it over
all completion tokens of the (per-device) batch (token-mean, no ratio); with
`adjust_gd` divides by max(1 − M/B, 0.05) (the α cap above); the advantage is
R − mean_g R, divided by (std_g R + 10⁻⁴) only when `scale_rewards` is set;
and verl `verl/trainer/ppo/core_algos.py` (`compute_gpg_outcome_advantage`,
`compute_policy_loss_gpg`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    accurate_gradient: bool = True
    """AGE: scale advantages by α = min(B / (B − M), max_alpha) (False: α = 1)."""
    max_alpha: float = pieces.setting(20.0, ge=1.0)
    """α_max: the official loss is divided by max((B − M)/B, 0.05), i.e. α ≤ 20."""
    std_normalise: bool = False
    """F_norm = group std of the rewards (+ std_eps) instead of 1."""
    std_eps: float = pieces.setting(1e-4, gt=0.0)
    """ε added to the group std when std_normalise (the official code's 1e-4)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = α (R_i − mean_g R) / F_norm on the trained tokens of row i."""
    k = rollout.group_size
    adv = ops.group_centre(rollout.rewards, k)
    if cfg.std_normalise:
        adv = adv / (ops.group_std(rollout.rewards, k) + cfg.std_eps)
    if cfg.accurate_gradient:
        weight = rollout.sample_weight.astype(jnp.float32)
        total = jnp.sum(weight)
        valid = jnp.sum(jnp.where(ops.degenerate_groups(rollout.rewards, k), 0.0, weight))
        # With no valid row every advantage is 0, so α is irrelevant there.
        alpha = jnp.where(valid > 0, jnp.minimum(total / jnp.where(valid > 0, valid, 1.0), cfg.max_alpha), 1.0)
        adv = alpha * adv
    return ops.broadcast_to_tokens(adv, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ) = −Σ w_t Â_t log π_θ(y_t) (no ratio: on-policy)."""
    return ops.reinforce_loss(
        stats, rollout, adv, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="gpg",
    family="reinforce",
    paper="GPG: A Simple and Strong Reinforcement Learning Baseline for Model Reasoning (Chu et al., 2025, arXiv:2504.02546)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("accurate_gradient", "max_alpha", "std_normalise", "std_eps"),
))
