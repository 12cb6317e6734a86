"""Lp-Reg: Low-probability Regularization.

Paper: Huang et al., "Low-probability Tokens Sustain Exploration in
Reinforcement Learning with Verifiable Reward", 2025, arXiv:2510.03222;
code: CarlanLark/Lp-Reg-dev (verl-based).

RLVR training collapses as valuable low-probability tokens ("reasoning
sparks") are driven to zero by negative advantages. Lp-Reg builds a less
noisy proxy of the policy by removing presumed-noise tokens with a min-p
filter and renormalising,

    π_proxy(v) = π(v) / Σ_{u: π(u) ≥ κ max π} π(u)   if π(v) ≥ κ · max_u π(u),   0 otherwise,

and, on the lowest-probability tokens of the negative-advantage samples,
replaces the clipped surrogate by the unclipped one plus a KL pull towards
the proxy, which raises a spark's probability back to its renormalised
value. With ρ = π_θ/π_old and GRPO advantages Â:

    S = { t : Â_t < 0, log π_θ(y_t) among the lowest ⌊q⁻ N⁻⌋ of the batch's
              negative-advantage tokens, log π_θ(y_t) < log π_proxy(y_t) }   (no gradient)
    ℓ_t = −ρ_t Â_t + c · KL_t(π_θ ‖ π_proxy)                          t ∈ S
          −min(ρ_t Â_t, clip(ρ_t, 1 − ε_l, 1 + ε_h) Â_t)              otherwise
    KL_t = π_proxy/π_θ − 1 − log(π_proxy/π_θ)                          (k3, "low_var_kl")

token-mean aggregated; q⁺ does the same for positive-advantage tokens (0 in
the paper). Filtered (noise) tokens have π_proxy = 0 and are never in S.
Defaults are the paper's run scripts: κ = 0.02, q⁻ = 0.01, q⁺ = 0, c = 1,
ε_l = 1.0, ε_h = 9.0 (ratio clipped to [0, 10]).

Proxy source. As in the paper's scripts (`minp_old_log_prob=True`),
π_proxy is built from the *old* policy: the trainer stores its top-k
log-probs at each position in `Rollout.old_topk_logprobs` and the proxy is
read at the sampled token from `behaviour_logprobs`, so it is fixed for the
whole update. `proxy_policy="current"` builds it from the current policy's
top-k (`PolicyStats.topk_logprobs`, no gradient), the official code's
`minp_old_log_prob=False` variant.

Deviations (stated, not hidden):
- Truncated support. The official code filters the full vocabulary; here the
  distribution is known on its top-k plus the sampled token
  (`ops.support_logprobs`), so the min-p mass is truncated to that support
  (exact when the kept tokens are among the top k).
- Selection count. The official code applies the regulariser only when
  max(1, ⌊q N⌋) > 1; here it is applied whenever q > 0 and there is a
  candidate (count max(1, ⌊q N⌋)).

Microbatch accumulation (exempt). S is a whole-batch quantile of the current
log-probs (the official code takes it per micro-batch).

Closest relative: GRPO/DAPO clipped surrogate; with q⁻ = q⁺ = 0 it is GRPO
with `kl_coef` = 0, token-mean and the (ε_l, ε_h) = (`clip_eps_low`,
`clip_eps_high`) bounds. `kl_estimator` estimates both the KL to the proxy
and (when `kl_coef` > 0) the KL to the reference.

Equivalents: Lp-Reg-dev verl `actor.loss_mode=lp_reg` (`minp_p_threshold`,
`logp_neg_k_percent`, `logp_pos_k_percent`, `ppo_kl_coef`, `kl_type`).

Verified against: CarlanLark/Lp-Reg-dev `verl/trainer/ppo/core_algos.py`
(`compute_policy_loss_lp_reg`), `verl/workers/actor/dp_actor.py`
(`apply_min_p`, regular_type "minp": keep π ≥ min_p · max π, then softmax)
and `recipe/lp_reg/Qwen3_14b_lp_reg_{on,off}policy_64gpu.sh` (defaults).

Cost: about 2.5-3.5x GRPO's loss-and-gradient time (benchmarks/results/loss_speed.json):
the whole-batch probability quantile sorts every token, and the regulariser
reads the top-k log-probs; small next to the policy forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    proxy_policy: Literal["old", "current"] = "old"
    """Policy π_proxy is built from: the old (sampling) policy, the paper's default, or the current one."""
    minp_threshold: float = pieces.setting(0.02, gt=0.0, le=1.0)
    """κ: tokens with π < κ · max π are filtered out of the proxy (min-p)."""
    neg_fraction: float = pieces.setting(0.01, ge=0.0, le=1.0)
    """q⁻: fraction of negative-advantage tokens (lowest log-prob first) considered."""
    pos_fraction: float = pieces.setting(0.0, ge=0.0, le=1.0)
    """q⁺: the same for positive-advantage tokens (0: none, the paper)."""
    reg_coef: float = pieces.setting(1.0, ge=0.0)
    """c: weight of KL(π_θ ‖ π_proxy) on the selected tokens (ppo_kl_coef; estimated with kl_estimator)."""
    clip_eps_low: float = pieces.setting(1.0, ge=0.0)
    """ε_l of the clipped surrogate on the other tokens (the paper's scripts: 1.0)."""
    clip_eps_high: float | None = pieces.setting(9.0, ge=0.0)
    """ε_h of the clipped surrogate on the other tokens (the paper's scripts: 9.0)."""
    scale_rewards: bool = True
    """GRPO's std-normalised group advantage (adv_estimator=grpo)."""


def proxy_logprob(topk_logprobs, logp, threshold: float):
    """log π_proxy(y_t) from the support of `ops.support_logprobs`: the min-p
    filtered, renormalised distribution at the sampled token (−inf if filtered)."""
    support = ops.support_logprobs(topk_logprobs, logp)
    top = jnp.max(jnp.maximum(support, logp[..., None]), axis=-1)
    cutoff = top + math.log(threshold)
    kept = support >= cutoff[..., None]
    log_mass = jax.nn.logsumexp(jnp.where(kept, support, -jnp.inf), axis=-1)
    return jnp.where(logp >= cutoff, logp - log_mass, -jnp.inf)


def _lowest(logp, candidates, fraction: float):
    """The max(1, ⌊q N⌋) lowest-log-prob candidates (none when q = 0)."""
    if fraction <= 0:
        return jnp.zeros_like(candidates)
    n = jnp.sum(candidates)
    count = jnp.maximum(1, jnp.floor(fraction * n).astype(jnp.int32))
    return ops.top_count_mask(-logp, candidates, count)


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score on each row's tokens."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """Clipped surrogate, with −ρÂ + c·KL(π_θ ‖ π_proxy) on the selected sparks."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    logp = stats.logprobs
    ratio = ops.ratio(logp, rollout.behaviour_logprobs)
    pg, clipped = ops.clipped_surrogate(ratio, adv, *cfg.clip_bounds)

    trained = ops.weighted_mask(rollout) > 0
    logp_ng = jax.lax.stop_gradient(logp)
    if cfg.proxy_policy == "old":
        proxy = proxy_logprob(rollout.old_topk_logprobs, rollout.behaviour_logprobs, cfg.minp_threshold)
    else:
        proxy = jax.lax.stop_gradient(proxy_logprob(stats.topk_logprobs, logp_ng, cfg.minp_threshold))
    chosen = _lowest(logp_ng, trained & (adv < 0), cfg.neg_fraction)
    chosen = chosen | _lowest(logp_ng, trained & (adv > 0), cfg.pos_fraction)
    selected = chosen & (logp_ng < proxy)

    target = jnp.where(selected, proxy, logp_ng)
    reg = ops.kl_estimate(logp, target, cfg.kl_estimator)
    per_token = jnp.where(selected, -ratio * adv + cfg.reg_coef * reg, pg)
    total, metrics = ops.regularised_policy_loss(
        per_token, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    mask = ops.weighted_mask(rollout)
    metrics["reg_frac"] = ops.masked_mean(selected.astype(jnp.float32), mask)
    metrics["proxy_kl"] = ops.masked_mean(jnp.where(selected, reg, 0.0), mask)
    return total, metrics | ops.ratio_metrics(ratio, clipped & ~selected, rollout)


def needs(cfg: Config) -> frozenset[str]:
    proxy_source = "old_topk_logprobs" if cfg.proxy_policy == "old" else "topk_logprobs"
    return frozenset({proxy_source})


register(Algorithm(
    name="lp_reg",
    family="policy-loss",
    paper="Low-probability Tokens Sustain Exploration in Reinforcement Learning with Verifiable Reward (Huang et al., 2025, arXiv:2510.03222)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=needs,
    topk=4,
    estimator_fields=("scale_rewards", "std_eps"),
    exemptions={
        "microbatch": "the regularised tokens are the lowest-probability fraction q of the whole "
        "batch's negative-advantage tokens (a batch quantile of the current log-probs; the "
        "official code takes it per micro-batch)",
    },
))
