"""HAPO: Heterogeneous Adaptive Policy Optimization (entropy-aware tokens).

Paper: Liu, Liu, Wen, Cai, Cui, He, Wu, Zhang, "From Uniform to
Heterogeneous: Tailoring Policy Optimization to Every Token's Nature", 2025,
arXiv:2509.16591.

DAPO-style clipped surrogate in which every stage depends on the token's
entropy. Per batch, each trained token's current entropy H_t (no gradient)
is turned into a score h_t ∈ [−1, 1]:

    z_t = (log H_t − Q_p) / sqrt(mean_t (log H_t − Q_p)²)   (Q_p: the p-quantile of log H, p = 0.8)
    h_t = z_t / max_{z > 0} z  if z_t > 0,   z_t / |min_{z < 0} z|  otherwise

Token Level Group Average advantage: per group, the mean and (biased) std of
the reward over all trained tokens of the group (each response weighted by
its length), Â_i = (R_i − μ_tok)/(σ_tok + ε); if any |Â_i| ≥ 5 in the group
it falls back to GRPO's z-score.

Differential Advantage Redistribution: with the neutral band
(1 − ε_l,t/2, 1 + ε_h,t/2) on the ratio ρ_t,

    Ã_t = Â_t (1 + β h_t)  if (h_t > 0 and ρ_t outside the band) or (h_t ≤ 0 and ρ_t inside it)
    Ã_t = Â_t              otherwise

Asymmetric Adaptive Clipping: ε_l,t = ε_l (1 − α h_t) for h_t ≤ 0
(low-entropy tokens may decrease more), ε_h,t = ε_h (1 + α h_t) for h_t > 0
(high-entropy tokens may increase more), the base bounds otherwise; then

    ℓ_t = −min(ρ_t Ã_t, clip(ρ_t, 1 − ε_l,t, 1 + ε_h,t) Ã_t),  dual-clipped at c for Ã < 0

token-mean aggregated. With α = β = 0 and the GRPO advantage this is
GRPO / DAPO with `kl_coef` = 0, dual clip c and token-mean. The base bounds
are `clip_eps_low` / `clip_eps_high` (None: same as low), α is `clip_alpha`,
β is `adv_beta` (not a KL weight).

The fourth component, Adaptive Temperature Sampling, changes the sampler
(temperature T·(1 + τ h_t)) and is not part of the loss; the behaviour
log-probs must be those of the temperature actually used.

Batch coupling: h_t normalises by whole-batch statistics (quantile, RMS,
extremes), so the `microbatch` invariant does not hold.

Closest relative: DAPO (clip 0.2, dual clip, token-mean). verl (authors'
fork): `adv_estimator=hapo`, `adaptive_clip`, `adaptive_advantage`.

Verified against: starriver030515/HAPO recipe/train.md,
verl/trainer/ppo/core_algos.py (`compute_entropy_h`, `ada_clip`,
`ada_advantage`, `compute_hapo_outcome_advantage`, `compute_policy_loss`)
and recipe/qwen2.5_math_7b.sh (ε_l = ε_h = 0.2, c = 10, pivot 0.8, α = β = 1,
token-mean, no KL). Deviations: (a) the reference scales negative z by
1/min z, which is negative and flips low-entropy scores to positive values,
contradicting the paper's description; here they are scaled by 1/|min z| into
[−1, 0]; (b) the reference's |Â| ≥ 5 fallback test also looks at padding
positions; here only trained tokens count.

Cost: about 2.5-2.9x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json):
the entropy pivot is a quantile of the whole batch's log-entropies (a sort of
every token); small next to the policy forward pass.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip, pieces.GroupStd):
    dual_clip: float | None = pieces.setting(10.0, gt=1.0)
    """Dual-clip bound c on negative advantages (the recipe's clip_ratio_c = 10)."""
    entropy_pivot: float = pieces.setting(0.8, ge=0.0, le=1.0)
    """p: quantile of the batch's log-entropies that scores 0."""
    clip_alpha: float = pieces.setting(1.0, ge=0.0)
    """α: strength of the entropy-adaptive clip bounds (0: fixed bounds)."""
    adv_beta: float = pieces.setting(1.0, ge=0.0)
    """β: strength of the differential advantage redistribution (0: off)."""
    token_level_advantage: bool = True
    """Token Level Group Average advantage; False: GRPO's z-score."""
    outlier_threshold: float = pieces.setting(5.0, gt=0.0)
    """Groups with a token-level advantage of at least this magnitude fall back to GRPO's."""


def advantages(rollout, cfg: Config, state):
    """Token Level Group Average advantage (GRPO's z-score on outlier groups)."""
    grpo = ops.group_zscore(rollout.rewards, rollout.group_size, cfg.std_eps)
    if not cfg.token_level_advantage:
        return ops.broadcast_to_tokens(grpo, rollout), state
    k = rollout.group_size
    lengths = ops.group_view(jnp.sum(rollout.loss_mask, axis=1).astype(jnp.float32), k)
    rewards = ops.group_view(rollout.rewards, k)
    total = jnp.maximum(jnp.sum(lengths, axis=1, keepdims=True), 1e-8)
    mean = jnp.sum(lengths * rewards, axis=1, keepdims=True) / total
    std = jnp.sqrt(jnp.sum(lengths * jnp.square(rewards - mean), axis=1, keepdims=True) / total)
    token_level = (rewards - mean) / (std + cfg.std_eps)
    outlier = jnp.any((jnp.abs(token_level) >= cfg.outlier_threshold) & (lengths > 0), axis=1, keepdims=True)
    adv = jnp.where(outlier, ops.group_view(grpo, k), token_level).reshape(-1)
    return ops.broadcast_to_tokens(adv, rollout), state


def entropy_scores(entropy, valid, pivot: float, eps: float = 1e-8):
    """[B, T] h_t ∈ [−1, 1] (0 off `valid`): log-entropy centred on its `pivot`
    quantile (nearest rank) over the valid tokens, divided by the RMS of the
    centred values, then positive values by their maximum and negative ones
    by their absolute minimum. Monotone in the entropy; no gradient."""
    valid = valid != 0
    log_h = jnp.log(jnp.maximum(jax.lax.stop_gradient(entropy), eps))
    count = jnp.sum(valid)
    ordered = jnp.sort(jnp.where(valid, log_h, jnp.inf).reshape(-1))
    rank = jnp.round(pivot * (jnp.maximum(count, 1) - 1)).astype(jnp.int32)
    pivot_value = jnp.where(count > 0, ordered[jnp.clip(rank, 0, ordered.shape[0] - 1)], 0.0)
    centred = jnp.where(valid, log_h - pivot_value, 0.0)
    rms = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(centred)) / jnp.maximum(count, 1), eps))
    z = centred / rms
    top = jnp.maximum(jnp.max(jnp.where(valid & (z > 0), z, 0.0)), eps)
    bottom = jnp.maximum(-jnp.min(jnp.where(valid & (z < 0), z, 0.0)), eps)
    return jnp.where(valid, jnp.where(z > 0, z / top, z / bottom), 0.0)


def adaptive_clip(h, clip_eps_low: float, clip_eps_high: float, alpha: float):
    """Per-token (ε_l,t, ε_h,t): ε_l widened on low-entropy (h ≤ 0) tokens,
    ε_h widened on high-entropy (h > 0) tokens."""
    eps_low = jnp.where(h <= 0, clip_eps_low * (1.0 - alpha * h), clip_eps_low)
    eps_high = jnp.where(h > 0, clip_eps_high * (1.0 + alpha * h), clip_eps_high)
    return eps_low, eps_high


def redistribute(adv, h, ratio, eps_low, eps_high, beta: float):
    """Differential Advantage Redistribution: Â(1 + βh) on high-entropy tokens
    outside the neutral ratio band and on low-entropy tokens inside it."""
    ratio = jax.lax.stop_gradient(ratio)
    neutral = (ratio > 1.0 - eps_low / 2) & (ratio < 1.0 + eps_high / 2)
    scaled = adv * (1.0 + beta * h)
    return jnp.where((h > 0) != neutral, scaled, adv)


def loss(stats, rollout, adv, cfg: Config, state):
    """Entropy-adaptive clipped surrogate with redistributed advantages."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    eps_low, eps_high = cfg.clip_bounds
    metrics = {}
    if cfg.clip_alpha or cfg.adv_beta:
        valid = ops.weighted_mask(rollout) > 0
        h = entropy_scores(stats.entropy, valid, cfg.entropy_pivot)
        eps_low, eps_high = adaptive_clip(h, *cfg.clip_bounds, cfg.clip_alpha)
        if cfg.adv_beta:
            adv = redistribute(adv, h, ratio, eps_low, eps_high, cfg.adv_beta)
        metrics["entropy_score_mean"] = ops.masked_mean(h, valid)
    pg, clipped = ops.clipped_surrogate(ratio, adv, eps_low, eps_high, cfg.dual_clip)
    total, reg_metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | reg_metrics | ops.ratio_metrics(ratio, clipped, rollout)


def needs(cfg: Config) -> frozenset[str]:
    """The entropy scores h_t read the current entropy whenever α or β is on."""
    return frozenset({"entropy"} if (cfg.clip_alpha or cfg.adv_beta) else ())


register(Algorithm(
    name="hapo",
    family="policy-loss",
    paper="From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature (Liu et al., 2025, arXiv:2509.16591)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=needs,
    estimator_fields=("token_level_advantage", "outlier_threshold", "std_eps"),
    exemptions={
        "microbatch": "token entropy scores are normalised by whole-minibatch statistics (the pivot "
                      "quantile, RMS and extreme values of log-entropy), so a microbatch scores tokens differently",
    },
))
