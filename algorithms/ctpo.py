"""CTPO: Cumulative Token Policy Optimization (CTPO-LA).

Paper: Zhang, Ye, Jin, Yu, Xiong, Sahu, Jiang, "Rethinking Importance
Sampling in LLM Policy Optimization: A Cumulative Token Perspective", 2026,
arXiv:2605.07331.

The token-level PG term of y_t needs the prefix correction
Π_{s≤t} ρ_s (unbiased, lower variance than the full-sequence ratio). CTPO
uses the cumulative ratio in log space, with the gradient flowing through the
current token only:

    log w_t = sg(Σ_{s≤t} log ρ_s) + log π_θ(y_t) − sg(log π_θ(y_t))   (trained s only)

and clips it in log space with bounds that grow with the token's position
t = 1, 2, ... among the row's trained tokens (CTPO-LA, "length-adaptive"),
since Var(log w_t) ∝ t:

    log w̃_t = clip(log w_t, −c_low·t^p, c_high·t^p),    dual clip at exp(c_dual·t^p)
    ℓ_t = max(−w_t Â_t, −w̃_t Â_t)                (Â ≥ 0)
    ℓ_t = min(max(−w_t Â_t, −w̃_t Â_t), −exp(c_dual t^p) Â_t)      (Â < 0)

token-mean aggregated, GRPO advantages. w_1 = ρ_1, w_T is the full-sequence
ratio, and on-policy every w_t = 1 (gradient = REINFORCE). `ratio_mode=
"geomean"` uses the running mean (1/t)Σ_{s≤t} log ρ_s instead (the authors'
variant, with p = −0.5 recommended). With one trained token per row CTPO is
PPO with ε_low = 1 − e^{−c_low}, ε_high = e^{c_high} − 1 and dual clip
e^{c_dual}.

Closest relative: GSPO-token (same stop-gradient construction with the
sequence mean) and PPO's token ratio. verl (authors' fork):
`loss_mode=cum-token-cumprod-la`.

Verified against: horizon-llm/CTPO verl/trainer/ppo/core_algos.py
(`_compute_policy_loss_cum_token_la_impl`) and ctpo.sh (c_low = 0.025,
c_high = 0.05, c_dual = 0.05, p = 0.5, default token-mean aggregation, no
KL). Deviation: the cumulative log-ratio is clamped to ±20 (the reference
clamps only above, at 10); values beyond either clamp are clipped by the
surrogate anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    clip_low: float = pieces.setting(0.025, ge=0.0)
    """c_low: log-space lower clip base; the bound at position t is −c_low·t^p."""
    clip_high: float = pieces.setting(0.05, ge=0.0)
    """c_high: log-space upper clip base; the bound at position t is c_high·t^p."""
    clip_dual: float | None = pieces.setting(0.05, gt=0.0)
    """c_dual: log-space dual-clip base, threshold exp(c_dual·t^p) for Â < 0 (None: off)."""
    position_power: float = 0.5
    """p: exponent of the position scaling t^p (0: uniform clip)."""
    ratio_mode: Literal["cumprod", "geomean"] = "cumprod"
    """cumprod: log w_t = Σ_{s≤t} log ρ_s; geomean: the running mean of the log-ratios."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def cumulative_log_ratio(log_ratio, mask, mode: str = "cumprod"):
    """[B, T]: Σ_{s≤t} log ρ_s over trained tokens (cumprod) or its running mean (geomean)."""
    total = ops.prefix_sum(log_ratio, mask)
    if mode == "geomean":
        total = total / jnp.maximum(jnp.cumsum(mask != 0, axis=-1), 1)
    elif mode != "cumprod":
        raise ValueError(f"unknown ratio_mode {mode!r}; choose cumprod or geomean")
    return total


def loss(stats, rollout, adv, cfg: Config, state):
    """Clipped surrogate on the cumulative (prefix) ratio with position-scaled log bounds."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    mask = rollout.loss_mask
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    weight = ops.stop_gradient_ratio(cumulative_log_ratio(log_ratio, mask, cfg.ratio_mode), stats.logprobs)
    position = jnp.maximum(jnp.cumsum(mask, axis=-1), 1).astype(jnp.float32)
    scale = position ** cfg.position_power
    eps_low = 1.0 - jnp.exp(-cfg.clip_low * scale)
    eps_high = jnp.exp(cfg.clip_high * scale) - 1.0
    dual = None if cfg.clip_dual is None else jnp.exp(cfg.clip_dual * scale)
    pg, clipped = ops.clipped_surrogate(weight, adv, eps_low, eps_high, dual)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["token_ratio_mean"] = ops.masked_mean(jnp.exp(log_ratio), ops.weighted_mask(rollout))
    return total, metrics | ops.ratio_metrics(weight, clipped, rollout)


register(Algorithm(
    name="ctpo",
    family="policy-loss",
    paper="Rethinking Importance Sampling in LLM Policy Optimization: A Cumulative Token Perspective (Zhang et al., 2026, arXiv:2605.07331)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
))
