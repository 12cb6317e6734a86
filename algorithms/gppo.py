"""GPPO: Gradient-Preserving clipping Policy Optimization (Klear-Reasoner).

Paper: Su et al., "Klear-Reasoner: Advancing Reasoning Capability via
Gradient-Preserving Clipping Policy Optimization", 2025, arXiv:2508.07629.

GRPO with clip-higher bounds whose clipped branch keeps a bounded gradient.
With ρ_t = π_θ/π_old and the group z-score advantage Â (as in GRPO), PPO's
clip(ρ, 1 − ε_l, 1 + ε_h) is replaced by

    clip_gp(ρ) = clamp(ρ, (1 − ε_l)·ρ/sg(ρ), (1 + ε_h)·ρ/sg(ρ))

whose forward value is clip(ρ, 1 − ε_l, 1 + ε_h) but whose gradient outside
the window is (1 ∓ ε)·∇log π instead of 0. The loss (token-mean) is

    ℓ_t = max(−ρ_t Â_t, −clip_gp(ρ_t) Â_t)               (Â ≥ 0)
    ℓ_t = min(max(−ρ_t Â_t, −clip_gp(ρ_t) Â_t), −c Â_t)    (Â < 0, dual clip c)

so: the loss value equals GRPO/DAPO clip-higher exactly; unclipped tokens have
the same gradient; a token with Â > 0 and ρ > 1 + ε_h gets gradient
−(1 + ε_h)·Â·∇log π (β_1 = β_2 = 1 in the paper's general form); a token with
Â < 0 and ρ < 1 − ε_l gets −(1 − ε_l)·Â·∇log π. Dual-clipped tokens
(Â < 0, ρ > c) have a constant loss, as in the reference code.

Closest relative: DAPO / GRPO with clip-higher (same value, different
gradient on clipped tokens). No TRL `loss_type` / verl `loss_mode` (the
authors ship it as a patched verl `compute_policy_loss`).

Verified against: Kwai-Klear/KlearReasoner README.md (`compute_gppo_loss`)
and recipe/dapo/perf_run_dapo_ours_math.sh (ε_l = 0.2, ε_h = 0.28,
clip_ratio_c = 10, token-mean, no KL). The recipe's extra NLL term on
correct responses (`postive_loss_coeff`, verl/workers/actor/dp_actor.py) is
not part of GPPO and is omitted.
"""

from __future__ import annotations

import dataclasses

import jax

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip, pieces.GroupStd):
    clip_eps_high: float | None = pieces.setting(0.28, ge=0.0)
    """ε_h: upper bound 1 + ε_h of the gradient-preserving clip window (the recipe's clip-higher value)."""
    dual_clip: float | None = pieces.setting(10.0, gt=1.0)
    """Dual-clip bound c on negative-advantage tokens (the recipe's clip_ratio_c; None: off)."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score, broadcast to the row's trained tokens."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """Clip-higher surrogate whose clip bounds are (1 ∓ ε)·ρ/sg(ρ)."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    scale = ratio / jax.lax.stop_gradient(ratio)  # value 1, gradient ∇log π
    # clipped_surrogate clips to [1 − eps_low, 1 + eps_high]; these "eps" make
    # the bounds (1 − ε_l)·scale and (1 + ε_h)·scale, carrying the gradient.
    clip_low, clip_high = cfg.clip_bounds
    eps_low = 1.0 - (1.0 - clip_low) * scale
    eps_high = (1.0 + clip_high) * scale - 1.0
    pg, clipped = ops.clipped_surrogate(ratio, adv, eps_low, eps_high, cfg.dual_clip)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="gppo",
    family="policy-loss",
    paper="Klear-Reasoner: Advancing Reasoning Capability via Gradient-Preserving Clipping Policy Optimization (Su et al., 2025, arXiv:2508.07629)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
))
