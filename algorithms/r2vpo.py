"""R²VPO: Ratio-Variance Regularized Policy Optimization.

Paper: Luo, Han, Hu, Li, Hao, "Ratio-Variance Regularized Policy
Optimization for Efficient LLM Fine-tuning", 2026, arXiv:2601.03320 (an
extended version: "Ratio-Variance Regularized Policy Optimization",
arXiv:2605.26784). No official code was found.

PPO's hard ratio clip zeroes the gradient of high-return, high-divergence
tokens. R²VPO instead constrains the variance (second central moment) of the
policy ratio ρ = π_θ/π_old over the batch, Var(ρ) ≤ δ, a smooth local
relaxation of the trust region, solved primal–dual with a Lagrange
multiplier λ ≥ 0 carried in the algorithm state:

    primal (θ):   L(θ) = −E[ρ_t Â_t] + λ (Var(ρ) − δ)
    dual (λ):     λ ← max(0, λ + η_λ (Var(ρ) − δ))          after each update

with Var(ρ) = Σ_t w_t (ρ_t − ρ̄)², ρ̄ = Σ_t w_t ρ_t, w the token-mean weights
of the minibatch, and Â GRPO's group z-score. The surrogate is unclipped.
The dual step is the registry's `post_update` hook; it reads the variance
the loss reports as `metrics["ratio_var"]` (declared a "sum" metric, so
microbatches add up to the minibatch's Σ_t w_t (ρ_t − c)²).

[inferred] Everything beyond the catalogue's formula: the token-level
variance with token-mean weights, centring at the batch mean (`center`
"batch"; "one" uses the known population mean E_{π_old}[ρ] = 1, i.e.
Σ_t w_t (ρ_t − 1)², a χ² trust region), token-mean aggregation, and the
defaults δ = 0.01, η_λ = 1, λ_0 = 1. Searched and not found: the method
section of either arXiv version (only the abstracts and title pages of
arxiv.org/html/2601.03320v1 and /2605.26784 are reachable, plus summaries
on emergentmind, tomesphere, newx.sg, yuv.ai), and any official code (none
is announced; a search of public GitHub code for "R2VPO" finds only
third-party toy re-implementations, which use a fixed-λ penalty λ (ρ − 1)²
and are not evidence of the paper's rule).
Not implemented: the paper's re-weighting of stale replay samples. The
abstracts say only that stale data are "dynamically reweighted rather than
discarded" by the variance constraint; no rule in terms of the policy
version (`Rollout.policy_version`) is given in any source found.

Microbatch accumulation (exempt with center "batch"). Σ w ρ² and Σ w ρ are
whole-minibatch sums, but Var = Σ w ρ² − (Σ w ρ)² squares one of them, and
its gradient 2w_t(ρ_t − ρ̄) needs the whole-minibatch mean of the current
ratios; a microbatch only sees its own. With center "one" the penalty
Σ w (ρ − 1)² is a plain sum and accumulation is exact.

Reductions: λ = 0 gives the unclipped importance-sampled policy gradient;
at ρ ≡ 1 (on-policy) Var = 0 with zero gradient, so the update is REINFORCE;
the dual step raises λ iff Var > δ.

Equivalents: none in verl/TRL.

Verified against: the two abstracts only (arXiv:2601.03320: a variance
(second central moment) constraint on the policy ratio, solved primal–dual,
replacing hard clipping; arXiv:2605.26784: the same as a "soft brake" that
down-weights stale data); the Lagrangian and the projected dual step above
follow the catalogue entry (ALGORITHMS.md #110) and remain [inferred].
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation, pieces.GroupStd):
    delta: float = pieces.setting(0.01, ge=0.0)
    """δ: the variance budget Var(ρ) ≤ δ [inferred default]."""
    dual_lr: float = pieces.setting(1.0, ge=0.0)
    """η_λ: step size of the dual ascent on λ [inferred default]."""
    lambda_init: float = pieces.setting(1.0, ge=0.0)
    """λ_0: initial multiplier [inferred default]."""
    center: Literal["batch", "one"] = "batch"
    """Centre of the second moment: the batch mean of ρ, or 1 = E_{π_old}[ρ]."""
    scale_rewards: bool = True
    """Divide group-centred rewards by the group std (GRPO's advantage)."""


def init_state(cfg: Config):
    """λ_0."""
    return jnp.asarray(cfg.lambda_init, jnp.float32)


def ratio_variance(ratio, rollout, center: str = "batch"):
    """Σ_t w_t (ρ_t − c)² with token-mean weights w; c = Σ w ρ ("batch") or 1."""
    weights = ops.token_weights(rollout, "token-mean")
    mean = jnp.sum(jnp.where(weights != 0, weights * ratio, 0.0))
    centre = mean if center == "batch" else 1.0
    return jnp.sum(jnp.where(weights != 0, weights * jnp.square(ratio - centre), 0.0))


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score on each row's tokens."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """The Lagrangian −E[ρÂ] + λ (Var(ρ) − δ) at the current λ (no gradient to λ)."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    total, metrics = ops.regularised_policy_loss(
        -ratio * adv, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    variance = ratio_variance(ratio, rollout, cfg.center)
    lam = jax.lax.stop_gradient(state)
    metrics["ratio_var"] = jax.lax.stop_gradient(variance)
    metrics["lambda"] = lam
    return total + lam * (variance - cfg.delta), metrics | ops.ratio_metrics(ratio, None, rollout)


def post_update(state, metrics, cfg: Config):
    """Dual ascent λ ← max(0, λ + η_λ (Var(ρ) − δ)) with the variance of the last loss."""
    return jnp.maximum(0.0, state + cfg.dual_lr * (metrics["ratio_var"] - cfg.delta))


register(Algorithm(
    name="r2vpo",
    family="policy-loss",
    paper="Ratio-Variance Regularized Policy Optimization for Efficient LLM Fine-tuning (Luo et al., 2026, arXiv:2601.03320)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    init_state=init_state,
    post_update=post_update,
    estimator_fields=("scale_rewards", "std_eps"),
    # Σ_t w_t (ρ_t − c)² with whole-minibatch weights: partial sums that add up over microbatches
    # (exactly with center "one"), and the dual step reads the minibatch total.
    metric_reductions={"ratio_var": "sum"},
    exemptions={
        "microbatch": "Var(ρ) = Σwρ² − (Σwρ)² squares a whole-minibatch sum of the current "
        "ratios; its gradient 2w(ρ − ρ̄) needs the minibatch mean ρ̄, which a microbatch does "
        "not see (exact with center='one')",
    },
))
