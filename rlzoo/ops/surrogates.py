"""Policy-gradient surrogates: the PPO clipped surrogate, the shared loss
assembly with KL and entropy terms, score-function losses, ratio metrics and
the self-play log-ratio regressions (REBEL / REFUEL, CoPG).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlzoo.ops.aggregation import Aggregation, aggregate, aggregate_group_pairs, loss_inputs, weighted_mask
from rlzoo.ops.groups import group_pair_differences, group_pair_weight
from rlzoo.ops.primitives import KLEstimator, kl_estimate, masked_max, masked_mean, ratio, sequence_sum
from rlzoo.rollout import PolicyStats, Rollout

Array = jax.Array


# --------------------------------------------------------------------------
# Clipped surrogate
# --------------------------------------------------------------------------

def clipped_surrogate(
    ratio_: Array,
    adv: Array,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
) -> tuple[Array, Array]:
    """PPO's per-token clipped surrogate loss and where clipping is active.

        ℓ = −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)

    With dual clip c > 1 (Ye et al. 2020, arXiv:1912.09729), negative
    advantages are also bounded: ℓ = min(ℓ, −c·A) for A < 0.
    Returns (ℓ [B, T], clipped [B, T] bool: the gradient of ℓ through r is 0).
    """
    chex.assert_equal_shape([ratio_, adv])
    unclipped = -ratio_ * adv
    clipped = -jnp.clip(ratio_, 1.0 - eps_low, 1.0 + eps_high) * adv
    loss = jnp.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is not None:
        bound = -dual_clip * adv
        dual_active = (adv < 0) & (loss > bound)
        loss = jnp.where(dual_active, bound, loss)
        is_clipped = is_clipped | dual_active
    return loss, is_clipped


# --------------------------------------------------------------------------
# Shared loss assembly and metrics
# --------------------------------------------------------------------------

def regularised_policy_loss(
    pg_per_token: Array,
    stats: PolicyStats,
    rollout: Rollout,
    aggregation: Aggregation,
    *,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    kl_importance_weighted: bool = False,
    entropy_coef: float = 0.0,
    norm_len: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Aggregate ℓ_t = pg_t + β·w_t·KL_t − c_H·H_t with one aggregation mode,
    where w_t = 1, or with `kl_importance_weighted` the token ratio
    ρ_t = π_θ(y_t)/π_old(y_t), differentiable and not clipped (only its
    log is clamped at ±20, as by `ratio` everywhere) (the unbiased KL
    estimate of DeepSeek-V3.2, arXiv:2512.02556, section 3.1; TRL
    GRPOTrainer's default `use_bias_correction_kl=True`): the tokens were
    sampled from π_old, so E_{π_old}[ρ_t KL_t] is the expectation under π_θ
    that the KL estimators assume. The weighting changes the gradient even
    at ρ = 1: ∇(ρ·KL) = ρ·(∇KL + KL·∇log π_θ).

    The KL and entropy terms sit inside the same per-sequence average as the
    policy-gradient term (as in GRPO's objective). Terms whose coefficient is
    0 are not computed, so `ref_logprobs` and `stats.entropy` are only read
    when used. `pg_per_token` must already be clean off the mask (built from
    `loss_inputs`). Returns (loss, metrics with pg_loss, and kl — the KL term
    as it enters the loss, weighted or not — and entropy when available).
    """
    stats, rollout, _ = loss_inputs(stats, rollout)
    mask = weighted_mask(rollout)
    total = pg_per_token
    metrics = {"pg_loss": aggregate(pg_per_token, rollout, aggregation, norm_len)}
    if kl_coef:
        kl = kl_estimate(stats.logprobs, rollout.ref_logprobs, kl_estimator)
        if kl_importance_weighted:
            kl = ratio(stats.logprobs, rollout.behaviour_logprobs) * kl
        total = total + kl_coef * kl
        metrics["kl"] = masked_mean(kl, mask)
    elif rollout.ref_logprobs is not None:
        metrics["kl"] = masked_mean(
            jax.lax.stop_gradient(kl_estimate(stats.logprobs, rollout.ref_logprobs, "k3")), mask
        )
    if entropy_coef:
        total = total - entropy_coef * stats.entropy
    if stats.entropy is not None:
        metrics["entropy"] = masked_mean(stats.entropy, mask)
    return aggregate(total, rollout, aggregation, norm_len), metrics


def ratio_metrics(ratio_: Array, clipped: Array | None, rollout: Rollout) -> dict[str, Array]:
    """clip_frac, ratio_mean and ratio_max over trained tokens (no gradient)."""
    mask = weighted_mask(rollout)
    ratio_ = jax.lax.stop_gradient(ratio_)
    metrics = {"ratio_mean": masked_mean(ratio_, mask), "ratio_max": masked_max(ratio_, mask)}
    if clipped is not None:
        metrics["clip_frac"] = masked_mean(clipped.astype(jnp.float32), mask)
    return metrics


def reinforce_loss(
    stats: PolicyStats,
    rollout: Rollout,
    adv: Array,
    aggregation: Aggregation,
    *,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    kl_importance_weighted: bool = False,
    entropy_coef: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """The score-function (REINFORCE) loss ℓ_t = −A_t · log π_θ(y_t), aggregated,
    plus the optional KL and entropy terms of `regularised_policy_loss`.

    Its gradient is −Σ_t w_t A_t ∇log π_θ(y_t): the policy gradient with the
    aggregation weights w. No importance ratio in the policy term: on-policy
    only."""
    stats, rollout, adv = loss_inputs(stats, rollout, adv)
    return regularised_policy_loss(
        -adv * stats.logprobs, stats, rollout, aggregation,
        kl_coef=kl_coef, kl_estimator=kl_estimator, kl_importance_weighted=kl_importance_weighted,
        entropy_coef=entropy_coef,
    )


def clipped_policy_loss(
    stats: PolicyStats,
    rollout: Rollout,
    adv: Array,
    aggregation: Aggregation,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    kl_importance_weighted: bool = False,
    entropy_coef: float = 0.0,
    norm_len: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    """The token-ratio PPO clipped surrogate −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)A)
    with ρ = π_θ/π_old per token, plus the KL / entropy terms of
    `regularised_policy_loss`, aggregated with `aggregation`; metrics include
    clip fraction and ratio mean / max. Shared by GRPO-family losses that differ
    only in bounds, advantages and aggregation (DAPO, Dr.GRPO, REINFORCE++,
    GRPO pass@k)."""
    stats, rollout, adv = loss_inputs(stats, rollout, adv)
    ratio_ = ratio(stats.logprobs, rollout.behaviour_logprobs)
    pg, clipped = clipped_surrogate(ratio_, adv, eps_low, eps_high, dual_clip)
    total, metrics = regularised_policy_loss(
        pg, stats, rollout, aggregation,
        kl_coef=kl_coef, kl_estimator=kl_estimator, kl_importance_weighted=kl_importance_weighted,
        entropy_coef=entropy_coef, norm_len=norm_len,
    )
    return total, metrics | ratio_metrics(ratio_, clipped, rollout)


def weighted_score_function_loss(
    stats: PolicyStats,
    rollout: Rollout,
    adv: Array,
    weight: Array,
    aggregation: Aggregation,
    *,
    clipped: Array | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    kl_importance_weighted: bool = False,
    entropy_coef: float = 0.0,
    norm_len: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    """ℓ_t = −A_t · sg(w_t) · log π_θ(y_t), aggregated, plus the KL / entropy
    terms of `regularised_policy_loss`.

    The weight w ≥ 0 carries no gradient, so ∇ℓ_t = −A_t w_t ∇log π_θ(y_t):
    with w = ρ this is the importance-weighted policy gradient (the gradient
    of −ρA), with w = 0 the token is blocked. Truncated-IS and masked
    score-function losses (CISPO-style, DPPO, REC, Trust-the-Batch) are this
    loss with different weights. `clipped` marks the tokens the caller counts
    as clipped / blocked for the clip_frac metric."""
    stats, rollout, adv = loss_inputs(stats, rollout, adv)
    weight = jnp.where(rollout.loss_mask, jax.lax.stop_gradient(weight), 0.0)
    ratio_ = ratio(stats.logprobs, rollout.behaviour_logprobs)
    pg = -adv * weight * stats.logprobs
    total, metrics = regularised_policy_loss(
        pg, stats, rollout, aggregation,
        kl_coef=kl_coef, kl_estimator=kl_estimator, kl_importance_weighted=kl_importance_weighted,
        entropy_coef=entropy_coef, norm_len=norm_len,
    )
    return total, metrics | ratio_metrics(ratio_, clipped, rollout)


# --------------------------------------------------------------------------
# Self-play: pairwise log-ratio regression
# --------------------------------------------------------------------------

def behaviour_sequence_log_ratio(stats: PolicyStats, rollout: Rollout) -> tuple[Array, dict[str, Array]]:
    """([B] s_i = Σ_t (log π_θ − log π_old)(y_i,t) over trained tokens, metrics).

    π_old is the sampling iterate (`behaviour_logprobs`), the anchor of the
    self-play losses. Metrics: the mean sequence log-ratio over kept rows and
    the token ratio statistics of `ratio_metrics`."""
    stats, rollout, _ = loss_inputs(stats, rollout)
    log_ratio = sequence_sum(stats.logprobs - rollout.behaviour_logprobs, rollout.loss_mask)
    metrics = {"seq_log_ratio": masked_mean(jax.lax.stop_gradient(log_ratio), rollout.sample_weight)}
    return log_ratio, metrics | ratio_metrics(ratio(stats.logprobs, rollout.behaviour_logprobs), None, rollout)


def group_pair_regression(pred: Array, target: Array, rollout: Rollout) -> Array:
    """Mean over pairs of rows of the same group of the squared error between
    predicted and target differences,

        ℓ_ij = ((pred_i − pred_j) − (target_i − target_j))²,

    the regression of REBEL / REFUEL (pred = log-ratio, target = η·reward)
    and CoPG. Zero exactly when pred − target is constant within each group;
    adding a per-group constant to pred or to target changes nothing."""
    chex.assert_rank([pred, target], 1)
    chex.assert_equal_shape([pred, target])
    residual = group_pair_differences(pred, rollout.group_size) - group_pair_differences(
        target, rollout.group_size
    )
    return aggregate_group_pairs(jnp.square(residual), group_pair_weight(rollout), rollout)


def behaviour_log_ratio_regression(
    stats: PolicyStats, rollout: Rollout, target: Array
) -> tuple[Array, dict[str, Array]]:
    """The REBEL / REFUEL loss: with s from `behaviour_sequence_log_ratio`,
    the mean over pairs of the same group of ((s_i − s_j) − (target_i − target_j))².
    Returns (loss, metrics with pg_loss)."""
    log_ratio, metrics = behaviour_sequence_log_ratio(stats, rollout)
    total = group_pair_regression(log_ratio, target, rollout)
    return total, metrics | {"pg_loss": total}
