"""MDPO: Mirror Descent Policy Optimization (on-policy variant).

Paper: Tomar, Shani, Efroni, Ghavamzadeh, "Mirror Descent Policy
Optimization", 2020, arXiv:2005.09814 (ICLR 2022); code:
manantomar/Mirror-Descent-Policy-Optimization (`mdpo_on/mdpo.py`).

Each iteration k approximately solves the mirror-descent step
π_{k+1} = argmax_π E_{s~d^{π_k}}[ E_{a~π}[A^{π_k}(s, a)] − (1/t_k) KL(π(·|s) ‖ π_k(·|s)) ]
by several SGD steps on

    J_k(θ) = E_{π_k}[ ρ_t A_t ] − (1/t_k) E_{s~π_k}[ KL(π_θ(·|s) ‖ π_k(·|s)) ],   ρ_t = π_θ(y_t)/π_k(y_t)

with no clipping. The official code anneals the step size t_k = 1 − k/K over
the K iterations of training (so the proximal weight 1/t_k grows) and
standardises the advantages.

LLM adaptation [inferred]. KL(π_θ ‖ π_k) at a position needs both full
next-token distributions, which the zoo does not carry (the official code
uses Gaussian policies in closed form). It is estimated from the sampled
token y_t ~ π_k by the f-divergence form of KL(π_θ ‖ π_k),

    KL_t ≈ ρ_t log ρ_t − ρ_t + 1     (≥ 0, unbiased since E_{π_k}[ρ] = 1,
                                       zero value and zero gradient at ρ = 1),

so the first SGD step of each iteration is the vanilla policy gradient, as
in the paper. The advantage is GRPO's group z-score broadcast to the tokens
and the loss is token-mean (the official code's mean over all timesteps).

    ℓ_t = −ρ_t Â_t + (1/t_k)(ρ_t log ρ_t − ρ_t + 1)

State: the number of batches seen, k (an int32), advanced by `advantages`
once per batch; with `anneal_iterations` = K the proximal weight is
1/(t · max(1 − k/K, 1/K)), otherwise the constant 1/t.

Closest relative: PPO's KL-penalty variant with the KL direction reversed and
a fixed (annealed) step size; with t → ∞ the unregularised IS surrogate
−ρA; at θ = θ_k REINFORCE.

Equivalents: none in verl/TRL.

Verified against: manantomar/Mirror-Descent-Policy-Optimization
`mdpo_on/mdpo.py` (surrgain = mean(ratio·atarg) − meankl / t_k, with
meankl = KL(π_θ ‖ π_old) and t_k = 1 − (iter − 1)/n_updates).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    step_size: float = pieces.setting(1.0, gt=0.0)
    """t (the initial t_k): the proximal weight is 1/t_k."""
    anneal_iterations: int | None = pieces.setting(None, ge=1)
    """K: anneal t_k = t·(1 − k/K) over K batches (the paper; None: constant t)."""
    scale_rewards: bool = True
    """Standardise group-centred rewards by the group std (the paper standardises advantages)."""


def init_state(cfg: Config):
    """k = 0 batches seen."""
    return jnp.zeros((), jnp.int32)


def proximal_weight(cfg: Config, state):
    """1/t_k for the batch being trained on (state counts it already)."""
    if cfg.anneal_iterations is None:
        return jnp.asarray(1.0 / cfg.step_size, jnp.float32)
    k = jnp.maximum(state - 1, 0).astype(jnp.float32)
    total = float(cfg.anneal_iterations)
    fraction = jnp.maximum(1.0 - k / total, 1.0 / total)
    return 1.0 / (cfg.step_size * fraction)


def kl_to_behaviour(logp, old_logp):
    """Per-token estimate of KL(π_θ ‖ π_old) from y ~ π_old: ρ log ρ − ρ + 1."""
    log_ratio = ops.log_ratio(logp, old_logp)
    ratio = jnp.exp(log_ratio)
    return ratio * log_ratio - ratio + 1.0


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score on each row's tokens; counts the batch."""
    adv = ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps)
    return adv, state + 1


def loss(stats, rollout, adv, cfg: Config, state):
    """−ρÂ + (1/t_k) KL̂(π_θ ‖ π_old) per token, aggregated."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    pg = -ratio * adv
    kl_old = kl_to_behaviour(stats.logprobs, rollout.behaviour_logprobs)
    weight = jax.lax.stop_gradient(proximal_weight(cfg, state))
    total, metrics = ops.regularised_policy_loss(
        pg + weight * kl_old, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["pg_loss"] = ops.aggregate(pg, rollout, cfg.aggregation)
    metrics["kl_old"] = ops.masked_mean(kl_old, ops.weighted_mask(rollout))
    metrics["proximal_weight"] = weight
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="mdpo",
    family="policy-loss",
    paper="Mirror Descent Policy Optimization (Tomar et al., 2020, arXiv:2005.09814)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    estimator_fields=("scale_rewards", "std_eps"),
))
