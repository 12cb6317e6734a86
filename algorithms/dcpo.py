"""DCPO: Dynamic Clipping Policy Optimization.

Paper: Yang et al., "DCPO: Dynamic Clipping Policy Optimization", 2025,
arXiv:2509.02333. (Registry name `dcpo`; not Distribution-Centric PO.)

Three changes to DAPO/GRPO:

(i) Dynamic adaptive clipping (DAC). With q = π_old(y_t) the constraint
|(ρ − 1)·ρ·q| ≤ ε gives probability-dependent bounds

    0.5 + ½·√max(1 − 4ε_low/q, 0)  ≤  ρ  ≤  min(0.5 + ½·√(1 + 4ε_high/q), ρ_max)

which widen as q falls (rare tokens may move further) and tend to
≈ [1 − ε_low, 1 + ε_high] as q → 1; ρ_max = max(c, 10) caps the upper bound
and negative advantages are dual-clipped at c, as in the reference code.

(ii) Smooth advantage standardisation (SAS). For prompt j seen for the i-th
time (i = 1 the first time) with group rewards R:

    Â_new   = (R − μ_new)/σ_new            (this step's group; 0 if σ_new = 0)
    Â_total = (R − μ_total)/σ_total        (all steps so far; 0 if σ_total = 0)
    SA_new   = (i−1)/i·Â_new + 1/i·Â_total,   SA_total = 1/i·Â_new + (i−1)/i·Â_total
    Â = SA_new if |SA_new| < |SA_total| else SA_total

with (μ_total, σ_total) the equal-weight pooling of the per-step group
statistics: μ ← (n μ + μ_new)/(n + 1),
σ² ← (n σ² + σ_new² + n/(n + 1)·(μ_new − μ)²)/(n + 1) for n previous steps
(σ_new with Bessel's correction, as torch.std). At i = 1, Â is GRPO's
z-score (without ε); a group whose current rewards are all equal still gets
Â = (R − μ_total)/(i·σ_total) ≠ 0 once earlier steps of its prompt differed.

(iii) "OTM" aggregation: token sum per response, mean over responses
(`seq-mean-token-sum`), no length normalisation.

The per-prompt statistics live in the algorithm state, a fixed-size table of
`max_prompts` slots indexed by `prompt_ids mod max_prompts` (so it stays
jit-able): distinct prompts that collide share a slot, and a prompt that
appears in two groups of one batch keeps one group's update. The state is
updated in `advantages` (once per batch); the loss does not read it.

Closest relative: DAPO (token-level clipped surrogate) with per-token bounds,
a stateful advantage and seq-mean-token-sum. verl (lime-RL fork):
`adv_estimator=dcpo`, `loss_mode=dcpo` with `clip_type=dynamic`.

Verified against: lime-RL/DCPO readme-zh.md (bounds, SAS, OTM; ε_low = 0.16,
ε_high = 0.2 in its comparison table) and verl/trainer/ppo/core_algos.py of
that repo (`get_clip_low_high`, `compute_policy_loss_dcpo`,
`compute_dcpo_outcome_advantage`, `get_mean_std`). [inferred] the
`user_old_mean_ratio` rescaling of old statistics (default 1) is omitted.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip):
    clip_eps_low: float = pieces.setting(0.16, ge=0.0)
    """ε_low of the dynamic lower bound, ρ(1 − ρ)q ≤ ε_low (the reference repository's 0.16)."""
    clip_eps_high: float | None = pieces.setting(0.2, ge=0.0)
    """ε_high of the dynamic upper bound, ρ(ρ − 1)q ≤ ε_high (the reference repository's 0.2;
    None: same as clip_eps_low)."""
    dual_clip: float | None = pieces.setting(3.0, gt=1.0)
    """Dual-clip bound c on negative advantages (verl's clip_ratio_c default, used by the reference code)."""
    aggregation: ops.Aggregation = "seq-mean-token-sum"
    """Aggregation: the paper's OTM loss is token-sum per response, mean over responses."""
    ratio_cap: float = pieces.setting(10.0, gt=1.0)
    """Upper limit on the dynamic upper bound (the reference code uses max(c, 10))."""
    smooth_advantages: bool = True
    """Use SAS; False gives GRPO's per-step z-score (with ε_std = 0)."""
    max_prompts: int = pieces.setting(1 << 16, ge=1)
    """Slots of the per-prompt statistics table (prompt_ids are hashed mod this)."""


def init_state(cfg: Config):
    """Per-slot step count, pooled mean and pooled std of past group rewards."""
    slots = cfg.max_prompts
    return {
        "count": jnp.zeros((slots,), jnp.int32),
        "mean": jnp.zeros((slots,), jnp.float32),
        "std": jnp.zeros((slots,), jnp.float32),
    }


def _zscore(x, mean, std):
    return jnp.where(std > 0, (x - mean) / jnp.where(std > 0, std, 1.0), 0.0)


def advantages(rollout, cfg: Config, state):
    """SAS advantages (or the step-1 z-score) and the updated prompt table."""
    if rollout.prompt_ids is None:
        raise ValueError("dcpo needs Rollout.prompt_ids (persistent prompt identity) for SAS")
    k = rollout.group_size
    rewards = ops.group_view(rollout.rewards, k)                       # [G, K]
    mean_new = rewards.mean(axis=1)
    std_new = jnp.sqrt(jnp.sum(jnp.square(rewards - mean_new[:, None]), axis=1) / max(k - 1, 1))
    adv_new = _zscore(rewards, mean_new[:, None], std_new[:, None])
    if not cfg.smooth_advantages:
        return ops.broadcast_to_tokens(adv_new.reshape(-1), rollout), state

    slot = jnp.mod(ops.group_view(rollout.prompt_ids, k)[:, 0], cfg.max_prompts)
    seen = state["count"][slot]                                        # n previous steps
    old_mean, old_std = state["mean"][slot], state["std"][slot]
    n = seen.astype(jnp.float32)
    times = n + 1.0
    mean = jnp.where(seen > 0, (old_mean * n + mean_new) / times, mean_new)
    var = (n * jnp.square(old_std) + jnp.square(std_new) + n / times * jnp.square(mean_new - old_mean)) / times
    std = jnp.where(seen > 0, jnp.sqrt(var), std_new)
    adv_total = _zscore(rewards, mean[:, None], std[:, None])

    w = (1.0 / times)[:, None]
    smooth_new = (1.0 - w) * adv_new + w * adv_total
    smooth_total = w * adv_new + (1.0 - w) * adv_total
    adv = jnp.where(jnp.abs(smooth_new) < jnp.abs(smooth_total), smooth_new, smooth_total)
    state = {
        "count": state["count"].at[slot].set(seen + 1),
        "mean": state["mean"].at[slot].set(mean),
        "std": state["std"].at[slot].set(std),
    }
    return ops.broadcast_to_tokens(adv.reshape(-1), rollout), state


def clip_bounds(old_logp, eps_low: float, eps_high: float, ratio_cap: float):
    """Dynamic bounds (lower, upper) on ρ for old-policy log-prob log q:
    the roots of ρ(1 − ρ)q = ε_low and ρ(ρ − 1)q = ε_high around ρ = 1."""
    inv_q = jnp.exp(jnp.clip(-old_logp, 0.0, 80.0))  # 1/q, kept finite (the bounds saturate long before)
    lower = 0.5 + 0.5 * jnp.sqrt(jnp.maximum(1.0 - 4.0 * eps_low * inv_q, 0.0))
    upper = jnp.minimum(0.5 + 0.5 * jnp.sqrt(1.0 + 4.0 * eps_high * inv_q), ratio_cap)
    return lower, upper


def loss(stats, rollout, adv, cfg: Config, state):
    """Clipped surrogate with per-token dynamic bounds, dual clip, OTM aggregation."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    cap = cfg.ratio_cap if cfg.dual_clip is None else max(cfg.ratio_cap, cfg.dual_clip)
    lower, upper = clip_bounds(rollout.behaviour_logprobs, *cfg.clip_bounds, cap)
    pg, clipped = ops.clipped_surrogate(ratio, adv, 1.0 - lower, upper - 1.0, cfg.dual_clip)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    mask = ops.weighted_mask(rollout)
    metrics["clip_upper_mean"] = ops.masked_mean(upper, mask)
    metrics["clip_lower_mean"] = ops.masked_mean(lower, mask)
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


def needs(cfg: Config) -> frozenset[str]:
    return frozenset({"prompt_ids"} if cfg.smooth_advantages else ())


register(Algorithm(
    name="dcpo",
    family="policy-loss",
    paper="DCPO: Dynamic Clipping Policy Optimization (Yang et al., 2025, arXiv:2509.02333)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    needs=needs,
    estimator_fields=("smooth_advantages", "max_prompts"),
))
