"""Trust the Batch: ESS-adaptive policy optimization (P3O in FeynRL).

Paper: Fakoor, Aubry, Stranges, Smola, "Trust the Batch, On- or Off-Policy:
Adaptive Policy Optimization for RL Post-Training", 2026, arXiv:2605.12380;
code: FeynRL-project/FeynRL, `algs/P3O/p3o.py` (the algorithm is called P3O
there).

Instead of a fixed clip range, the batch's own normalised effective sample
size of the token ratios ρ = π_θ/π_old sets both the cap on the importance
weight and the strength of a KL trust region to the behaviour policy:

    ESS = (Σ_t ρ_t)² / (N Σ_t ρ_t²)  ∈ (1/N, 1]        (trained tokens, no gradient)
    ℓ_t = −Â_t · sg(min(ρ_t, ESS)) · log π_θ(y_t)  +  (1 − ESS) · KL_t(π_θ ‖ π_old)
    KL_t = π_old/π_θ − 1 − log(π_old/π_θ)               (k3, FeynRL's estimator)

token-mean aggregated (FeynRL's global token normalisation), Â GRPO's group
z-score. FeynRL's kl_coeff·KL_ref is `kl_coef` (0 by default); `kl_estimator`
estimates both KL terms (FeynRL: k3). When the ratios are uniform
(on-policy) ESS = 1: the weight is 1 and the KL term vanishes, so the update
is the on-policy score-function update; stale or mismatched data
concentrate the ratios, ESS drops, the weights are capped lower and the
KL-to-behaviour term tightens, with no new hyper-parameter. Note the cap
min(ρ, ESS) ≤ ESS ≤ 1 also bounds weights of tokens whose ratio is above 1.

Microbatch accumulation (exempt). ESS is a ratio of whole-batch sums of the
current ratios and enters every token's loss, so splitting the batch changes
it; FeynRL itself computes it per gradient-accumulation micro-batch
(all-reduced over data-parallel ranks), here it is computed over whatever
batch reaches the loss.

Closest relative: CISPO-style stop-gradient IS weights (clip(ρ, 0, ESS)) plus
an adaptive KL penalty; on-policy it is REINFORCE with token-mean weights.

Equivalents: FeynRL `alg: p3o`; no verl/TRL loss_mode.

Verified against: FeynRL `algs/P3O/p3o.py` (`calculate_ess`,
`compute_policy_loss`: rho = clamp(ratio, 0, ess), loss = −rho.detach()·logπ·A
+ (1 − ess)·KL_old + kl_coeff·KL_ref − ent_coeff·H, global token
normalisation) and `algs/RL/README.md` (the k3 estimator). The per-sequence
ESS in FeynRL (`calculate_seq_ess`) is not used by its loss and is not
implemented.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    scale_rewards: bool = True
    """Divide group-centred rewards by the group std (FeynRL's z-score advantage)."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score on each row's tokens."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """ESS-capped score-function loss plus (1 − ESS)·KL(π_θ ‖ π_old)."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    mask = ops.weighted_mask(rollout)
    ess = jax.lax.stop_gradient(ops.effective_sample_size(ratio, mask))
    total, metrics = ops.weighted_score_function_loss(
        stats, rollout, adv, jnp.minimum(ratio, ess), cfg.aggregation,
        clipped=ratio > ess, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
        kl_importance_weighted=cfg.kl_importance_weighted,
        entropy_coef=cfg.entropy_coef,
    )
    kl_old = ops.kl_estimate(stats.logprobs, rollout.behaviour_logprobs, cfg.kl_estimator)
    total = total + (1.0 - ess) * ops.aggregate(kl_old, rollout, cfg.aggregation)
    metrics["ess"] = ess
    metrics["kl_behaviour"] = ops.masked_mean(kl_old, mask)
    return total, metrics


register(Algorithm(
    name="trust_the_batch",
    family="policy-loss",
    paper="Trust the Batch, On- or Off-Policy: Adaptive Policy Optimization for RL Post-Training (Fakoor et al., 2026, arXiv:2605.12380)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps"),
    exemptions={
        "microbatch": "ESS = (Σρ)²/(NΣρ²) is a ratio of whole-batch sums of the current ratios "
        "that scales every token's weight and the KL term; a microbatch computes its own ESS "
        "(as FeynRL does per gradient-accumulation micro-batch)",
    },
))
