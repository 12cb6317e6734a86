"""BAPO: Balanced Policy Optimization with Adaptive Clipping.

Paper: Xi et al., "BAPO: Stabilizing Off-Policy Reinforcement Learning for
LLMs via Balanced Policy Optimization with Adaptive Clipping", 2025,
arXiv:2510.18927.

PPO/GRPO's clipped surrogate with explicit ratio bounds [c_low, c_high]
chosen per batch:

    J = Σ_t w_t min(ρ_t Â_t, clip(ρ_t, c_low, c_high) Â_t)

Start from (c_low, c_high) = (a⁻, a⁺). While the positive-token
contribution ρ is below the target ρ₀, first raise c_high by δ₁ (letting
more low-probability positive tokens through) until the next step would
pass b⁺, then raise c_low by δ₂ (clipping away more low-probability
negative tokens) until the next step would pass b⁻ (the paper's
Algorithm 1). The contribution counts the tokens that still carry gradient
at the candidate bounds:

    S₊ = Σ_{Â_t > 0, ρ_t ≤ c_high} w_t ρ_t |Â_t|,   S₋ = Σ_{Â_t < 0, ρ_t ≥ c_low} w_t ρ_t |Â_t|
    ρ  = S₊ / (S₊ + S₋)        (1 when both are 0)

with w_t the aggregation weights. S₊ grows with c_high and S₋ shrinks with
c_low, so ρ is non-decreasing along the search path. The path is a static
grid of 1 + n₊ + n₋ candidates (n± from the ranges and steps), ρ is
evaluated on all of them outside the gradient (`lax.map`), and the first
candidate with ρ ≥ ρ₀ (or the last) is used. If ρ ≥ ρ₀ already at (a⁻, a⁺)
the loss is PPO-clip with those bounds.

Batch coupling: the bounds are a function of the whole minibatch (as in the
official code, which all-reduces S± across data-parallel ranks), so a
microbatch sees different bounds: the `microbatch` invariant does not hold.

Closest relative: GRPO/DAPO with asymmetric clipping (fixed bounds). verl:
the authors' recipe `loss_mode=bapo` with `adv_estimator=grpo`.

Verified against: WooooDyy/BAPO README.md (ρ₀ = 0.5, c_low ∈ [0.6, 0.9],
c_high ∈ [1.2, 3.0]) and recipe/bapo/policy_loss.py; the search order and
the gradient-carrying contribution follow the paper's Algorithm 1 as
transcribed in third-party notes (δ₁ = 0.05, δ₂ = 0.02; the notes give
ρ₀ = 0.4 for the paper's runs). [inferred] Deviations from the official
recipe code, which (a) searches c_low before c_high and (b) measures the
contribution on the clipped surrogate values of all tokens, under which
raising c_low can only lower ρ; its yaml uses ρ₀ = 0.5 (as pos/neg = 1),
steps 0.05 and a dual clip c = 3 (verl's default; off here).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.DualClip, pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    rho_target: float = pieces.setting(0.5, ge=0.0, le=1.0)
    """ρ₀: target share of the positive-advantage tokens in the gradient-carrying surrogate."""
    clip_low_start: float = pieces.setting(0.6, gt=0.0, le=1.0)
    """a⁻: initial lower ratio bound c_low (an explicit bound, not 1 − ε)."""
    clip_low_max: float = pieces.setting(0.9, gt=0.0, le=1.0)
    """b⁻: largest c_low the search may reach."""
    clip_low_step: float = pieces.setting(0.02, ge=0.0)
    """δ₂: step of c_low (0: c_low stays at a⁻)."""
    clip_high_start: float = pieces.setting(1.2, ge=1.0)
    """a⁺: initial upper ratio bound c_high."""
    clip_high_max: float = pieces.setting(3.0, ge=1.0)
    """b⁺: largest c_high the search may reach."""
    clip_high_step: float = pieces.setting(0.05, ge=0.0)
    """δ₁: step of c_high (0: c_high stays at a⁺)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for start, end in (("clip_low_start", "clip_low_max"), ("clip_high_start", "clip_high_max")):
            if getattr(self, end) < getattr(self, start):
                raise ValueError(f"bapo: --{end.replace('_', '-')} must be >= --{start.replace('_', '-')}; "
                                 f"got {getattr(self, end)!r} < {getattr(self, start)!r}")


def search_path(cfg: Config) -> tuple[list[float], list[float]]:
    """The (c_low, c_high) candidates visited by Algorithm 1, in order."""
    n_high = max(int(math.floor((cfg.clip_high_max - cfg.clip_high_start) / cfg.clip_high_step + 1e-9)), 0) \
        if cfg.clip_high_step > 0 else 0
    n_low = max(int(math.floor((cfg.clip_low_max - cfg.clip_low_start) / cfg.clip_low_step + 1e-9)), 0) \
        if cfg.clip_low_step > 0 else 0
    highs = [cfg.clip_high_start + i * cfg.clip_high_step for i in range(n_high + 1)]
    lows = [cfg.clip_low_start + i * cfg.clip_low_step for i in range(1, n_low + 1)]
    return [cfg.clip_low_start] * len(highs) + lows, highs + [highs[-1]] * len(lows)


def positive_share(ratio, adv, weights, clip_low, clip_high):
    """ρ(c_low, c_high): the share of positive-advantage tokens in Σ w ρ |Â| over
    the tokens whose clipped surrogate still depends on ρ (1 if there are none)."""
    contribution = weights * ratio * jnp.abs(adv)
    pos = jnp.sum(jnp.where((adv > 0) & (ratio <= clip_high), contribution, 0.0))
    neg = jnp.sum(jnp.where((adv < 0) & (ratio >= clip_low), contribution, 0.0))
    total = pos + neg
    return jnp.where(total > 0, pos / jnp.where(total > 0, total, 1.0), 1.0)


def adaptive_bounds(ratio, adv, weights, cfg: Config):
    """(c_low, c_high, ρ at them): the first candidate of `search_path` with ρ ≥ ρ₀, else the last."""
    ratio, adv, weights = jax.lax.stop_gradient((ratio, adv, weights))
    lows, highs = search_path(cfg)
    lows, highs = jnp.asarray(lows, jnp.float32), jnp.asarray(highs, jnp.float32)
    shares = jax.lax.map(lambda b: positive_share(ratio, adv, weights, b[0], b[1]), (lows, highs))
    ok = shares >= cfg.rho_target
    index = jnp.where(jnp.any(ok), jnp.argmax(ok), lows.shape[0] - 1)
    return lows[index], highs[index], shares[index]


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score (the recipe's adv_estimator=grpo)."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """PPO-clip with the batch's adaptive bounds [c_low, c_high]."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    weights = ops.token_weights(rollout, cfg.aggregation)
    clip_low, clip_high, share = adaptive_bounds(ratio, adv, weights, cfg)
    pg, clipped = ops.clipped_surrogate(ratio, adv, 1.0 - clip_low, clip_high - 1.0, cfg.dual_clip)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics |= {"clip_low": clip_low, "clip_high": clip_high, "positive_share": share}
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="bapo",
    family="policy-loss",
    paper="BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced Policy Optimization with Adaptive Clipping (Xi et al., 2025, arXiv:2510.18927)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
    exemptions={
        "microbatch": "the clip bounds are searched on the whole minibatch's positive/negative "
                      "contribution (BAPO Algorithm 1), so a microbatch can pick different bounds",
    },
))
