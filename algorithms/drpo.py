"""DRPO: Decoupled Reward Policy Optimization.

Paper: Gang Li, Yan Chen, Ming Lin and Tianbao Yang, "DRPO: Efficient
Reasoning via Decoupled Reward Policy Optimization", 2025, arXiv:2510.04474.
Code: https://github.com/Optimization-AI/DRPO.

Adding a length penalty to GRPO's reward can give a correct but long
response a negative advantage. DRPO decouples the length signal of correct
responses from the incorrect ones: lengths are compared only among the
correct responses of a group, inside a discriminative objective (DisCO) that
raises correct and lowers incorrect responses. With s_θ(y) the
length-normalised log-likelihood score, P_g / N_g the correct / incorrect
responses of group g, and G groups, the objective (maximised) is

    s_θ(y)  = (1/|y|) Σ_t log π_θ(y_t | x, y_<t)
    J(θ)    = (1/G) Σ_g [ Σ_{i∈P_g} ŵ_i s_θ(y_i) − τ log (1/|N_g|) Σ_{j∈N_g} exp(s_θ(y_j)/τ) ]
    ŵ_i     = exp(r_len(y_i)/λ) / Σ_{i'∈P_g} exp(r_len(y_i')/λ),    r_len(y) = 1 − |y|/L_max

summed only over groups with at least one correct and one incorrect
response (the official code drops all-correct and all-wrong groups; G still
counts every group). ŵ is the closed-form solution of "maximise the length
reward of the positive distribution under a KL penalty λ to π_old",
P*(y) ∝ π_old(y)·exp(r_len(y)/λ) on the correct responses, estimated with
on-policy samples, so ŵ is a softmax of r_len/λ over the group's correct
responses: every correct response keeps a positive weight, shorter ones more.
λ → ∞ gives uniform weights (DisCO, no length preference).

Trust region: instead of ratio clipping, a KL penalty with a detached
coefficient,
    loss = −J(θ) + β_KL · [KL̄ − δ]₊ · KL̄,    KL̄ = token mean of KL(π_old‖π_θ) estimates,
whose gradient is that of (β_KL/2)[KL̄ − δ]₊² (official defaults δ = 1e-4,
β_KL = 1000, estimator "kl" = k1, τ = 10, λ = 0.1).

What `advantages` returns: a dict of targets. DRPO's loss is not linear in a
per-row advantage (the negative term is a log-sum-exp of the current
scores), so "advantages" [B, T] holds the weight each row's score s_θ(y)
gets in ∇J at π_θ = π_old, times K: +K·ŵ_i on correct rows,
−K·softmax_{j∈N_g}(s_old(y_j)/τ) on incorrect rows, 0 in skipped groups. It
sums to 0 in every group, and with ratio 1 the gradient of the loss is
exactly REINFORCE on it with seq-mean-token-mean weights (tested). The loss
reads "positive_weights" [B] (K·ŵ_i on the correct rows of groups with both
outcomes, 0 elsewhere) and "negative" [B] (the incorrect rows of those
groups), and recomputes the negative softmax from the current log-probs.

Inputs: correct = `rewards` > `correct_threshold` (binary {0, 1} rewards in
the paper). The length reward is r_len = 1 − |y|/L_max with |y| = Σ_t
loss_mask (the trained tokens) and L_max = `max_length` (the generation
budget; None uses the rollout width T), or, with `length_component=c`, the
column `reward_components[:, c]` taken as r_len directly. Rows with
sample_weight 0 or no trained tokens are neither correct nor incorrect.
The loss value uses τ·log-mean-exp where the official code uses a
surrogate with value τ (S/sg(S)); the gradients agree.

Microbatching: exempt. The trust-region coefficient β_KL·[KL̄ − δ]₊ depends on
the KL averaged over the whole minibatch, which a microbatch cannot see (the
official code computes it per micro-batch). Everything else splits exactly.

Closest relative: DisCO (Li et al. 2025, arXiv:2505.12366), which DRPO is at
λ → ∞. Differs from GRPO: no group z-score, no ratio clipping, length only
among correct responses. Equivalents: none in TRL or verl; the official
verl fork's `actor.loss_type=drpo`.

Verified against: `Optimization-AI/DRPO` `verl/verl/trainer/ppo/core_algos.py`
(`compute_policy_loss_drpo`: length-normalised scores, valid-group mask,
weights exp((1 − L/L_max)/tau2) normalised over positives, negative
log-sum-exp with temperature tau, KL penalty) and
`scripts/train/run_drpo_1.5b_8k.sh` (delta, beta, tau, tau2, ppo_kl_type).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    tau: float = pieces.setting(10.0, gt=0.0)
    """τ: temperature of the log-sum-exp over incorrect responses."""
    lam: float = pieces.setting(0.1, gt=0.0)
    """λ: KL weight of the optimal positive distribution (temperature of the
    length weights; official `tau2`). Larger λ, weaker length preference."""
    correct_threshold: float = 0.5
    """A response is correct when its reward exceeds this."""
    max_length: int | None = pieces.setting(None, gt=0)
    """L_max in r_len = 1 − |y|/L_max (the generation budget; None: the rollout width T)."""
    length_component: int | None = pieces.setting(None, ge=0)
    """Read r_len from this column of `reward_components` instead of the mask length."""
    kl_delta: float = pieces.setting(1e-4, ge=0.0)
    """δ: trust-region radius of the KL(π_old‖π_θ) penalty."""
    kl_beta: float = pieces.setting(1000.0, ge=0.0)
    """β_KL: weight of the KL(π_old‖π_θ) trust-region penalty (not a KL to the reference)."""
    kl_estimator: ops.KLEstimator = "k1"
    """Estimator of KL(π_old‖π_θ) per token (official `ppo_kl_type=kl` is k1)."""


def _partition(rollout, cfg: Config):
    """[B] bool masks of the correct and incorrect rows of groups that have both."""
    lengths = jnp.sum(rollout.loss_mask, axis=1)
    usable = (rollout.sample_weight > 0) & (lengths > 0)
    correct = rollout.rewards > cfg.correct_threshold
    pos, neg = usable & correct, usable & ~correct
    k = rollout.group_size
    both = (ops.group_masked_mean(pos, usable, k) > 0) & (ops.group_masked_mean(neg, usable, k) > 0)
    return pos & both, neg & both


def _length_reward(rollout, cfg: Config):
    if cfg.length_component is not None:
        return rollout.reward_components[:, cfg.length_component]
    max_length = rollout.seq_len if cfg.max_length is None else cfg.max_length
    return 1.0 - jnp.sum(rollout.loss_mask, axis=1) / max_length


def advantages(rollout, cfg: Config, state):
    """{"advantages": K·ŵ_i on correct rows, −K·softmax(s_old/τ) on incorrect rows (see
    module doc), "positive_weights": [B] K·ŵ_i, "negative": [B] the incorrect rows}."""
    pos, neg = _partition(rollout, cfg)
    k = rollout.group_size
    w_pos = ops.group_masked_softmax(_length_reward(rollout, cfg) / cfg.lam, pos, k)
    s_old = ops.sequence_mean(rollout.behaviour_logprobs, rollout.loss_mask)
    w_neg = ops.group_masked_softmax(s_old / cfg.tau, neg, k)
    adv = ops.broadcast_to_tokens(k * (w_pos - w_neg), rollout)
    # K·ŵ_i read back from the token array, as the loss did before the targets
    # were a dict (bit-identical; K·w_pos differs from it by rounding only).
    positive = jnp.where(pos, ops.sequence_mean(adv, rollout.loss_mask), 0.0)
    return {"advantages": adv, "positive_weights": positive, "negative": neg}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """−J(θ) + β_KL·[KL̄ − δ]₊·KL̄ with the positive weights K·ŵ from the targets."""
    stats, rollout, _ = ops.loss_inputs(stats, rollout)
    neg = targets["negative"]
    k = rollout.group_size
    scores = ops.sequence_mean(stats.logprobs, rollout.loss_mask)
    neg_term = cfg.tau * ops.group_masked_logmeanexp(scores / cfg.tau, neg, k)
    neg_count = ops.group_view(neg, k).sum(axis=1)
    neg_share = jnp.repeat(k * neg_term / jnp.maximum(neg_count, 1), k)
    per_row = jnp.where(neg, neg_share, 0.0) - targets["positive_weights"] * scores
    pg_loss = ops.aggregate_rows(per_row, rollout)
    kl_per_token = ops.kl_estimate(rollout.behaviour_logprobs, stats.logprobs, cfg.kl_estimator)
    kl = ops.aggregate(kl_per_token, rollout, "token-mean")
    coef = jax.lax.stop_gradient(cfg.kl_beta * jnp.maximum(kl - cfg.kl_delta, 0.0))
    metrics = {"pg_loss": pg_loss, "ppo_kl": kl, "constraint_active": (kl > cfg.kl_delta).astype(jnp.float32)}
    metrics |= ops.ratio_metrics(ops.ratio(stats.logprobs, rollout.behaviour_logprobs), None, rollout)
    if stats.entropy is not None:
        metrics["entropy"] = ops.masked_mean(stats.entropy, ops.weighted_mask(rollout))
    return pg_loss + coef * kl, metrics


register(Algorithm(
    name="drpo",
    family="advantage",
    paper="DRPO: Efficient Reasoning via Decoupled Reward Policy Optimization (Li, Chen, Lin and Yang, 2025, arXiv:2510.04474)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=lambda cfg: frozenset({"reward_components"}) if cfg.length_component is not None else frozenset(),
    # The KL̄ of the trust region is an `ops.aggregate` over the whole minibatch: microbatch parts add up.
    metric_reductions={"ppo_kl": "sum"},
    estimator_fields=("lam", "correct_threshold", "max_length", "length_component"),
    plain_advantage=False,
    exemptions={
        "microbatch": "the trust-region coefficient β_KL·[KL̄ − δ]₊ uses the KL(π_old‖π_θ) "
                      "averaged over the whole minibatch, which a microbatch cannot see",
    },
))
