"""MHPO: Modulated Hazard-aware Policy Optimization.

Paper: Wang, Liu, Gu, Sun, Han, "MHPO: Modulated Hazard-aware Policy
Optimization for Stable Reinforcement Learning", 2026, arXiv:2603.16929.

Replaces GRPO's hard clip and min (non-differentiable boundaries, flat
zero-gradient regions) by one smooth multiplicative weight on the advantage:

Log-Fidelity Modulator (LFM): the log-ratio is squashed, in log space, into
a bounded interval; it is the identity to first order at ρ = 1:

    ψ(ρ) = c · tanh(log ρ / c)   ∈ (−c, c),   ψ(1) = 0,   dψ/dlog ρ = sech²(log ρ / c) ≤ 1

Decoupled Hazard Penalty (DHP): Weibull cumulative hazards H(x) = (x/λ)^k of
the upward and the downward shift, each with its own scale and shape, read
through a softplus s(x) = log(1 + eˣ) of the stop-gradient modulated ratio:

    ζ(ρ) = (s(sg ψ)/λ₊)^{k₊} + (s(−sg ψ)/λ₋)^{k₋}

    ℓ_t = −exp(ψ(ρ_t) − ζ(ρ_t)) · Â_t

with GRPO advantages and seq-mean-token-mean aggregation (1/G Σ_i 1/|y_i| Σ_t).
ζ carries no gradient: e^{−ζ} ∈ (0, 1) only rescales each token's gradient
("survival weight"), it never turns it around. The per-token gradient
multiplier e^{ψ−ζ}·sech²(log ρ/c) is bounded by e^c for every ρ (the paper's
gradient bound), and it decays smoothly, never to exactly 0, far off-policy.
Defaults penalise downward shifts (policy erosion) more than upward ones:
ζ(ρ) > ζ(1/ρ) for ρ > 1.

On-policy (ρ = 1) ψ = 0 and ψ' = 1 but ζ(1) = (log 2/λ₊)^{k₊} + (log 2/λ₋)^{k₋}
(≈ 1.328 at the defaults) because s(0) = log 2: the gradient is REINFORCE's
times the constant e^{−ζ(1)} (≈ 0.265), not REINFORCE's itself. Without the
hazard (`hazard=False`, the paper's "LFM only" ablation) it is exactly
REINFORCE's, and with c → ∞ the loss tends to the unclipped IS surrogate −ρÂ.

Closest relative: SAPO (smooth gate instead of a hard clip) and GRPO. No
TRL / verl equivalent.

Verified against: the abstract (arXiv:2603.16929 v1) and two independent
write-ups of the full paper, since neither the method section nor official
code (none released) is in our sources: a Chinese paper-notes file
("mhpo.md", method section "方法详解") and the re-implementation in the
hope586/verl fork (report "MHPO 实现报告" and
examples/grpo_trainer/run_qwen3-4b_gsm8k_3090_mhpo.sh). Both give ψ = c·tanh(log ρ/c), ζ with softplus and
stop-gradient ψ as above, the objective −E[1/G Σ_i 1/|y_i| Σ_t e^{ψ−ζ} Â], the
bound e^c, and the defaults c = 1.5, (k₊, λ₊) = (1.5, 1.0), (k₋, λ₋) =
(2.0, 0.8) (the script cites the paper's Section 4.1). This replaces the
earlier inferred additive form −ψÂ + κ(H₊ + H₋) and its defaults.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    fidelity_scale: float = pieces.setting(1.5, gt=0.0)
    """c: ψ = c·tanh(log ρ / c) lies in (−c, c); the gradient multiplier is at most e^c."""
    hazard: bool = True
    """Apply the decoupled hazard penalty e^{−ζ} (False: the paper's LFM-only ablation)."""
    hazard_scale_up: float = pieces.setting(1.0, gt=0.0)
    """λ₊: Weibull scale of the upward shift (ρ > 1)."""
    hazard_shape_up: float = pieces.setting(1.5, gt=0.0)
    """k₊: Weibull shape of the upward shift."""
    hazard_scale_down: float = pieces.setting(0.8, gt=0.0)
    """λ₋: Weibull scale of the downward shift (ρ < 1); smaller than λ₊: earlier onset."""
    hazard_shape_down: float = pieces.setting(2.0, gt=0.0)
    """k₋: Weibull shape of the downward shift; larger than k₊: faster growth."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """Aggregation (the paper's 1/G Σ_i 1/|y_i| Σ_t)."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def log_fidelity(log_ratio, scale: float):
    """ψ = c·tanh(log ρ / c): bounded in (−c, c), ψ(1) = 0, slope 1 at ρ = 1."""
    return scale * jnp.tanh(log_ratio / scale)


def hazard_terms(psi, cfg: Config):
    """(H₊, H₋) = ((s(sg ψ)/λ₊)^{k₊}, (s(−sg ψ)/λ₋)^{k₋}), s = softplus; no gradient.

    softplus > 0, so the powers are smooth for any shape k."""
    psi = jax.lax.stop_gradient(psi)
    up = (jax.nn.softplus(psi) / cfg.hazard_scale_up) ** cfg.hazard_shape_up
    down = (jax.nn.softplus(-psi) / cfg.hazard_scale_down) ** cfg.hazard_shape_down
    return up, down


def loss(stats, rollout, adv, cfg: Config, state):
    """−exp(ψ(ρ) − ζ(ρ))·Â per token."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    psi = log_fidelity(log_ratio, cfg.fidelity_scale)
    log_weight = psi
    if cfg.hazard:
        up, down = hazard_terms(psi, cfg)
        zeta = up + down
        log_weight = psi - zeta
    total, metrics = ops.regularised_policy_loss(
        -jnp.exp(log_weight) * adv, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    if cfg.hazard:
        mask = ops.weighted_mask(rollout)
        metrics["hazard"] = ops.masked_mean(zeta, mask)
        metrics["survival_weight"] = ops.masked_mean(jnp.exp(-zeta), mask)
    return total, metrics | ops.ratio_metrics(jnp.exp(log_ratio), None, rollout)


register(Algorithm(
    name="mhpo",
    family="policy-loss",
    paper="MHPO: Modulated Hazard-aware Policy Optimization for Stable Reinforcement Learning (Wang et al., 2026, arXiv:2603.16929)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
))
