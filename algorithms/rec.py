"""REC: group-relative REINFORCE with Clipping (the REC family).

Paper: Yao, Chen, Sun, Chen, Zhang, Pan, Li, Ding, "Group-Relative REINFORCE
Is Secretly an Off-Policy Algorithm: Demystifying Some Myths About GRPO and
Its Friends", 2025, arXiv:2509.24203 (ICLR 2026); code: Trinity-RFT
`examples/rec_gsm8k`.

The paper derives group-relative REINFORCE without assuming on-policy data
and argues that what keeps it stable off-policy is regularising the update
(clipping), not importance sampling. REC is REINFORCE with the group-mean
baseline whose tokens are masked once the (stop-gradient) ratio
ρ = π_θ/π_old leaves a region, optionally importance-weighted:

    Â_i   = R_i − mean_g R                       (÷ std_g R with scale_rewards)
    ℓ_t   = −w_t Â_i log π_θ(y_t) · M_t,          w_t = 1 (NoIS) | sg(ρ_t) (IS)
    M_t   = 1                                                            clip "none"
            1[Â ≥ 0, ρ ≤ 1 + ε_h] ∨ 1[Â ≤ 0, ρ ≥ 1 − ε_l]                 "one-side"
            1[1 − ε_l ≤ ρ ≤ 1 + ε_h]                                     "two-side"
            two-side ∨ 1[Â ≥ 0, ρ ≤ 1 − ε'_l] ∨ 1[Â ≤ 0, ρ ≥ 1 + ε'_h]   "ring"

token-mean aggregated. The paper's headline member, REC-OneSide-NoIS (the
default), keeps GRPO's one-sided clipping mask but drops the IS weight; the
paper also runs it with the wider (ε_l, ε_h) = (0.6, 2.0) (`clip_eps_low`,
`clip_eps_high`; the default 0.2 is symmetric). weight="advantage"
is the paper's RED-Weight data shaping, w_t = exp(Â/τ) (unnormalised, as in
Trinity; the exponent is clamped at ±20 here for finiteness). The
regularised members (REP family) are `opmd` and `asymre`; RED-Drop (random
negative-sample dropping) is a data filter and is not implemented.

Reductions: clip "none" with w = 1 is group-mean REINFORCE (`reinforce`,
token-mean); "one-side" with w = sg(ρ) and scale_rewards has GRPO's
(`kl_coef` = 0, token-mean) gradient, since sg(ρ)∇log π = ∇ρ.

Equivalents: Trinity-RFT `algorithm_type: rec` (`policy_loss_fn_args`
clip_mode / weight / epsilon_*; its epsilon_low / epsilon_high are
`clip_eps_low` / `clip_eps_high` here), no verl/TRL loss_mode.

Verified against: Trinity-RFT `trinity/algorithm/policy_loss_fn/rec_policy_loss.py`,
`trinity/algorithm/advantage_fn/rec_advantage.py` (std with unbiased=False,
hence std_ddof = 0) and `examples/rec_gsm8k/README.md` (the member configs).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    clip_mode: Literal["none", "one-side", "two-side", "ring"] = "one-side"
    """Region of the ratio whose tokens are trained (see the module docstring)."""
    weight: Literal["none", "importance_sampling", "advantage"] = "none"
    """Per-token weight: 1 (NoIS), sg(ρ) (IS) or exp(Â/τ) (RED-Weight)."""
    eps_low_prime: float = pieces.setting(0.6, ge=0.0)
    """ε'_l: the ring's outer lower bound 1 − ε'_l (Trinity's ring default)."""
    eps_high_prime: float = pieces.setting(2.0, ge=0.0)
    """ε'_h: the ring's outer upper bound 1 + ε'_h (Trinity's ring default)."""
    temp: float = pieces.setting(1.0, gt=0.0)
    """τ of the RED-Weight weight exp(Â/τ)."""
    scale_rewards: bool = False
    """Divide group-centred rewards by the group std (the REC default does not)."""
    std_ddof: int = pieces.setting(0, ge=0)
    """Delta degrees of freedom of the group std (Trinity: unbiased=False)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − mean_g R (÷ (std_g R + ε) with scale_rewards)."""
    adv = ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps, ddof=cfg.std_ddof)
    return adv, state


def in_region(ratio, adv, cfg: Config):
    """M_t: the tokens REC trains on (ratio carries no gradient here)."""
    eps_low, eps_high = cfg.clip_bounds
    inner = (ratio >= 1.0 - eps_low) & (ratio <= 1.0 + eps_high)
    if cfg.clip_mode == "none":
        return jnp.ones_like(ratio, dtype=bool)
    if cfg.clip_mode == "one-side":
        return ((adv >= 0) & (ratio <= 1.0 + eps_high)) | ((adv <= 0) & (ratio >= 1.0 - eps_low))
    if cfg.clip_mode == "two-side":
        return inner
    if cfg.clip_mode == "ring":
        return (
            inner
            | ((adv >= 0) & (ratio <= 1.0 - cfg.eps_low_prime))
            | ((adv <= 0) & (ratio >= 1.0 + cfg.eps_high_prime))
        )
    raise ValueError(f"unknown clip_mode {cfg.clip_mode!r}; choose none, one-side, two-side or ring")


def loss(stats, rollout, adv, cfg: Config, state):
    """Masked, optionally weighted group-relative REINFORCE, token-mean."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    keep = in_region(ratio, adv, cfg)
    if cfg.weight == "none":
        weight = jnp.ones_like(ratio)
    elif cfg.weight == "importance_sampling":
        weight = ratio
    elif cfg.weight == "advantage":
        weight = jnp.exp(jnp.clip(adv / cfg.temp, -ops.LOG_RATIO_CLAMP, ops.LOG_RATIO_CLAMP))
    else:
        raise ValueError(f"unknown weight {cfg.weight!r}; choose none, importance_sampling or advantage")
    return ops.weighted_score_function_loss(
        stats, rollout, adv, jnp.where(keep, weight, 0.0), cfg.aggregation,
        clipped=~keep, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="rec",
    family="policy-loss",
    paper="Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm: Demystifying Some Myths About GRPO and Its Friends (Yao et al., 2025, arXiv:2509.24203)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps", "std_ddof"),
))
