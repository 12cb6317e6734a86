"""SAPO: Soft Adaptive Policy Optimization.

Paper: Qwen team, "Soft Adaptive Policy Optimization", 2025,
arXiv:2511.20347. Seed #31 of the catalogue.

Hard clipping zeroes a token's gradient as soon as its ratio leaves
[1 − ε, 1 + ε]. SAPO replaces the clipped surrogate by a smooth,
temperature-controlled gate of the ratio:

    f_τ(r)    = (4/τ) · σ(τ (r − 1))
    τ_{i,t}   = τ_pos if Â_{i,t} > 0 else τ_neg
    J(θ)      = 1/G Σ_i 1/|o_i| Σ_t f_{τ_{i,t}}(r_{i,t}(θ)) Â_{i,t}

with r_{i,t} = π_θ(o_{i,t})/π_old(o_{i,t}) and GRPO's group z-score Â. The
gradient weight of a token is f'_τ(r)·r = 4 σ(1 − σ) · r, with
σ = σ(τ(r − 1)): exactly 1 at r = 1 (so on-policy SAPO is REINFORCE with
seq-mean-token-mean weights), positive for every r, and decaying smoothly as
r moves away from 1, so off-policy tokens are attenuated instead of cut off.
τ_neg > τ_pos damps negative-advantage tokens faster (the paper motivates
this by negative updates spreading probability mass over many unsampled
tokens, which destabilises training).
As τ → 0 the gate tends to 2/τ + (r − 1), whose gradient is the unclipped
surrogate's. Defaults τ_pos = 1.0, τ_neg = 1.05, seq-mean-token-mean
aggregation, no KL (`kl_coef` = 0).

Closest relative: GRPO (hard clip) and GSPO (sequence-level trust region);
SAPO is token-level and sequence-coherent in effect.

Equivalents: TRL `GRPOTrainer(loss_type="sapo", sapo_temperature_pos=1.0,
sapo_temperature_neg=1.05)` (grpo aggregation; with beta > 0 TRL 1.16 by
default weights the KL term by the token ratio, `kl_importance_weighted=True`
here, off by default); verl `loss_mode=sapo`
(`tau_pos=1.0`, `tau_neg=1.05`, forced seq-mean-token-mean).

Verified against: verl `verl/trainer/ppo/core_algos.py::compute_policy_loss_sapo`
(gate σ(τ(r − 1))·4/τ, τ = tau_pos where A > 0 else tau_neg) and TRL
`trl/trainer/grpo_trainer.py::_compute_loss` (loss_type "sapo"): both agree
with the gate (4/τ)σ(τ(r−1)) recorded in ALGORITHMS.md #31. Ratios are
computed from log-ratios clamped at ±20 (TRL does not clamp; the gate is
saturated long before).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    tau_pos: float = pieces.setting(1.0, gt=0.0)
    """τ_pos: gate temperature for tokens with positive advantage."""
    tau_neg: float = pieces.setting(1.05, gt=0.0)
    """τ_neg: gate temperature for tokens with non-positive advantage."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """1/G Σ_i 1/|o_i| Σ_t (the paper's objective; TRL and verl's SAPO)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std."""


def advantages(rollout, cfg: Config, state):
    """Â_i: GRPO's group z-score on the trained tokens."""
    return ops.group_advantage(rollout, eps=cfg.std_eps, ddof=cfg.std_ddof), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): −f_τ(r)·Â per token, aggregated."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    tau = jnp.where(adv > 0, cfg.tau_pos, cfg.tau_neg)
    gate = jax.nn.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)
    total, metrics = ops.regularised_policy_loss(
        -gate * adv, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="sapo",
    family="policy-loss",
    paper="Soft Adaptive Policy Optimization (Qwen team, 2025, arXiv:2511.20347)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps", "std_ddof"),
))
