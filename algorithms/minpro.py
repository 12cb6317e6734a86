"""MinPRO: Minimum Prefix Ratio policy optimization.

Paper: Lei, Cheng, Tao, "A Step Back: Prefix Importance Ratio Stabilizes
Policy Optimization", 2026, arXiv:2601.22718.

Off-policy, the rigorous correction of token t's policy-gradient term is the
prefix ratio Π_{s<t} ρ_s (for the state y_{<t}) times the token ratio ρ_t;
the token-level surrogate of PPO/GRPO drops the prefix factor and becomes
unstable under large off-policy drift, while the cumulative product itself
explodes or vanishes. MinPRO replaces the prefix product by a
non-cumulative surrogate, the smallest token ratio seen in the prefix:

    m_t = min(1, min_{s<t} ρ_s)            (trained s only; m = 1 for the first token)
    ℓ_t = sg(m_t) · max(−ρ_t Â_t, −clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t)

so a token is down-weighted as soon as any earlier token of its response has
become much less likely under π_θ than under π_old. m_t is non-increasing
along the response; on-policy (all ρ = 1) m ≡ 1 and the loss is GRPO's.

Closest relative: GRPO / DAPO (token ratio, no prefix factor) and CTPO
(cumulative prefix product). No TRL / verl equivalent.

Verified against: the abstract (arXiv HTML v1, arxiv.org/html/2601.22718v1):
the rigorous correction of token t is the prefix ratio, and MinPRO replaces
it by a non-cumulative surrogate, the minimum token ratio of the *preceding*
prefix (hence s < t, exclusive). emergentmind's topic page
(api.emergentmind.com/topics/minimum-prefix-ratio-minpro) writes the prefix
ratio as Π_t = Π_{i≤t} ρ_i and MinPRO as a "minimum-based product" that
down-weights a token's gradient when any single-step ratio in its prefix is
small, which matches m_t multiplying the token term. [inferred] Still not
confirmed: the exact combination (sg(m_t) times PPO's clipped token
surrogate), the cap at 1 (`prefix_cap`) and the defaults (ε = 0.2 as
`clip_eps_low` with symmetric `clip_eps_high`,
token-mean aggregation, GRPO advantages). Searched: the arXiv HTML and the
paper-summary pages (emergentmind, koineu, alphaxiv-style summaries,
huggingface papers) only expose the abstract and introduction, and no
official or third-party code ("MinPRO", "minimum prefix ratio",
"policy_loss_minpro", cummin-based verl/TRL losses) was found.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.GroupStd):
    prefix_cap: float | None = pieces.setting(1.0, gt=0.0)
    """Upper cap on the prefix weight m_t (None: the plain prefix minimum) [inferred]."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def prefix_weight(log_ratio, mask, cap: float | None = 1.0):
    """[B, T] m_t = min(cap, min_{s<t} ρ_s) over trained tokens (1 with an empty prefix), no gradient."""
    log_min = ops.prefix_min(jax.lax.stop_gradient(log_ratio), mask, exclusive=True, initial=0.0)
    if cap is not None:
        log_min = jnp.minimum(log_min, jnp.log(cap))
    return jnp.exp(log_min)


def loss(stats, rollout, adv, cfg: Config, state):
    """sg(m_t) times GRPO's clipped token surrogate."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    ratio = jnp.exp(log_ratio)
    pg, clipped = ops.clipped_surrogate(ratio, adv, *cfg.clip_bounds)
    weight = prefix_weight(log_ratio, rollout.loss_mask, cfg.prefix_cap)
    total, metrics = ops.regularised_policy_loss(
        weight * pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["prefix_weight_mean"] = ops.masked_mean(weight, ops.weighted_mask(rollout))
    return total, metrics | ops.ratio_metrics(ratio, clipped, rollout)


register(Algorithm(
    name="minpro",
    family="policy-loss",
    paper="A Step Back: Prefix Importance Ratio Stabilizes Policy Optimization (Lei, Cheng, Tao, 2026, arXiv:2601.22718)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
))
