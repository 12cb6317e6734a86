"""OPMD: Online Policy Mirror Descent (Kimi k1.5), as regularised REINFORCE.

Papers: Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs",
2025, arXiv:2501.12599 (§2.3.2, the mirror-descent surrogate); reinterpreted
in Yao et al., "Group-Relative REINFORCE Is Secretly an Off-Policy
Algorithm", 2025, arXiv:2509.24203 (§2.2 and the REP family of
Trinity-RFT `examples/rec_gsm8k`).

Kimi's OPMD regresses the reward on the log-ratio to the previous policy,

    L(θ) = 1/K Σ_i ( r_i − τ log Z − τ log π_θ(y_i)/π_old(y_i) )²,   τ log Z ≈ mean_g r,

whose gradient, divided by 2τ, is that of group-relative REINFORCE plus a
proximal penalty on the log-ratio:

    L(θ) ∝ −1/K Σ_i (r_i − r̄) log π_θ(y_i) + τ/(2K) Σ_i (log π_θ(y_i) − log π_old(y_i))².

The official code (Trinity-RFT REC loss with regularizer="k2") applies the
penalty per token and folds the ½ into the coefficient:

    Â_i = R_i − mean_g R,    ℓ_t = −Â_i log π_θ(y_t) + τ (log π_θ(y_t) − log π_old(y_t))²

token-mean aggregated, τ = 0.1. The penalty is ≥ 0 and has zero gradient at
θ = θ_old, so the first step of each batch is the REINFORCE step; it pulls
later steps back towards π_old. No importance weights, no clipping. (The
earlier Trinity "opmd" loss −Â log π / (1 + τ) with a log-avg-exp baseline is
the technical-report variant of the same idea; this file follows the paper's
reinterpretation.)

Closest relative: `reinforce` with the group-mean baseline (τ = 0, token-mean).
Siblings: `asymre` (forward-KL regulariser), `rec` (clipping instead).

Equivalents: Trinity-RFT `algorithm_type: rec` with clip_mode "none",
weight "none", regularizer "k2", regularizer_coef τ; no verl/TRL loss_mode
(verl's `dro` loss is the same form with ½β).

Verified against: Trinity-RFT `trinity/algorithm/policy_loss_fn/rec_policy_loss.py`
(regularizer "k2") and `examples/rec_gsm8k/README.md` ("Kimi's OPMD",
regularizer_coef 0.1). Deviation from the paper's equation: the penalty is
per token (as in the official code), not on the whole-response log-ratio.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    tau: float = pieces.setting(0.1, ge=0.0)
    """τ: weight of the per-token penalty (log π_θ − log π_old)² (½ folded in)."""
    scale_rewards: bool = False
    """Divide group-centred rewards by the group std (the paper's runs do not)."""


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − mean_g R (÷ std with scale_rewards)."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """REINFORCE plus τ (log π_θ − log π_old)² per token."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    pg = -adv * stats.logprobs
    penalty = jnp.square(stats.logprobs - rollout.behaviour_logprobs)
    total, metrics = ops.regularised_policy_loss(
        pg + cfg.tau * penalty, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["pg_loss"] = ops.aggregate(pg, rollout, cfg.aggregation)
    metrics["proximal_penalty"] = ops.masked_mean(penalty, ops.weighted_mask(rollout))
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    return total, metrics | ops.ratio_metrics(ratio, None, rollout)


register(Algorithm(
    name="opmd",
    family="reinforce",
    paper="Kimi k1.5: Scaling Reinforcement Learning with LLMs (Kimi Team, 2025, arXiv:2501.12599); as regularised REINFORCE in Yao et al., 2025, arXiv:2509.24203",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps"),
))
