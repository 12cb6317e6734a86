"""DHPO: Dynamic Hybrid Policy Optimization (token and sequence ratios).

Paper: Min, Liu, Wang, Zhang, Zeng, Zhang, Su, "Orchestrating Tokens and
Sequences: Dynamic Hybrid Policy Optimization for RLVR", 2026,
arXiv:2601.05607 (Findings of ACL 2026).

Bridges GRPO and GSPO inside one clipped surrogate: the token ratio ρ_t and
the sequence ratio s_i = exp(mean_t log ρ_t) (GSPO-token form, gradient
through the current token) are each clipped in their own trust region
("branch-specific clipping") and then mixed per token:

    r_t   = w_t ρ_t + (1 − w_t) s_{i,t}
    r̂_t   = w_t clip(ρ_t, 1 − ε^tok_low, 1 + ε^tok_high) + (1 − w_t) clip(s_{i,t}, 1 − ε^seq_low, 1 + ε^seq_high)
    ℓ_t   = −min(r_t Â_t, r̂_t Â_t)

with w_t = `token_weight` (½: the averaged mixing) or, entropy-guided,
w_t = H_t / (H_t + H̄_i): tokens more uncertain than their response's
average lean on the token ratio. seq-mean-token-mean aggregation, GRPO
advantages. w = 1 gives GRPO and w = 0 GSPO (GSPO-token form); on-policy
both ratios are 1 and the gradient is REINFORCE's.

Closest relatives: GRPO (w = 1), GSPO (w = 0). No TRL / verl equivalent
(code "upon acceptance").

Verified against: the abstract (arxiv.org/html/2601.05607v1; ACL Findings
2026 page aclanthology.org/2026.findings-acl.1883): one clipped surrogate,
averaged and entropy-guided mixing, separate trust regions per branch
*before* mixing. A reading note on the full paper (repository
Memory4ever/AI-System-Design, paper triage table) confirms the order: each
ratio is clipped in its own range and then mixed, with a stop-gradient
entropy weight (ours reads sampling-time entropy, which carries no gradient).
[inferred] Still not confirmed: the exact mixing inside the min (above: the
mixed raw ratio against the mixed clipped ratio), the form of the entropy
weight H_t / (H_t + H̄_i), and the defaults (GRPO's ε = 0.2 for the token
branch, GSPO's 3e-4 / 4e-4 for the sequence branch, w = ½). Searched: the
arXiv HTML, OpenReview, arxivlens and emergentmind pages expose only the
abstract; the code is "upon acceptance" and no re-implementation was found
in the code index.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    token_clip_low: float = pieces.setting(0.2, ge=0.0)
    """ε^tok_low: lower clip of the token ratio (GRPO's) [inferred]."""
    token_clip_high: float = pieces.setting(0.2, ge=0.0)
    """ε^tok_high: upper clip of the token ratio [inferred]."""
    seq_clip_low: float = pieces.setting(3e-4, ge=0.0)
    """ε^seq_low: lower clip of the sequence ratio (GSPO's) [inferred]."""
    seq_clip_high: float = pieces.setting(4e-4, ge=0.0)
    """ε^seq_high: upper clip of the sequence ratio (GSPO's) [inferred]."""
    mixing: Literal["fixed", "entropy"] = "fixed"
    """fixed (averaged): w_t = token_weight; entropy: w_t = H_t / (H_t + H̄_response) [inferred form]."""
    token_weight: float = pieces.setting(0.5, ge=0.0, le=1.0)
    """w for the fixed mixing (1: GRPO, 0: GSPO)."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """Aggregation (GRPO / GSPO's per-response mean)."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def mixing_weight(rollout, cfg: Config):
    """[B, T] w_t: the weight of the token-ratio surrogate."""
    if cfg.mixing == "fixed":
        return jnp.full(rollout.loss_mask.shape, cfg.token_weight, jnp.float32)
    if cfg.mixing != "entropy":
        raise ValueError(f"unknown mixing {cfg.mixing!r}; choose fixed or entropy")
    entropy = jnp.maximum(rollout.sample_entropy, 0.0)
    total = entropy + ops.sequence_mean(entropy, rollout.loss_mask)[:, None]
    return jnp.where(total > 0, entropy / jnp.where(total > 0, total, 1.0), 0.5)


def loss(stats, rollout, adv, cfg: Config, state):
    """−min(r Â, r̂ Â) with the mixed raw and branch-clipped ratios."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    mask = rollout.loss_mask
    log_ratio = ops.log_ratio(stats.logprobs, rollout.behaviour_logprobs)
    token_ratio = jnp.exp(log_ratio)
    seq_log_ratio = ops.sequence_mean(log_ratio, mask)[:, None]
    seq_ratio = ops.stop_gradient_ratio(jnp.broadcast_to(seq_log_ratio, mask.shape), stats.logprobs)
    w = mixing_weight(rollout, cfg)
    mixed = w * token_ratio + (1.0 - w) * seq_ratio
    mixed_clipped = (
        w * jnp.clip(token_ratio, 1.0 - cfg.token_clip_low, 1.0 + cfg.token_clip_high)
        + (1.0 - w) * jnp.clip(seq_ratio, 1.0 - cfg.seq_clip_low, 1.0 + cfg.seq_clip_high)
    )
    unclipped, clipped = -mixed * adv, -mixed_clipped * adv
    pg = jnp.maximum(unclipped, clipped)
    total, metrics = ops.regularised_policy_loss(
        pg, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    weights = ops.weighted_mask(rollout)
    metrics["seq_ratio_mean"] = ops.masked_mean(jax.lax.stop_gradient(seq_ratio), weights)
    metrics["token_weight_mean"] = ops.masked_mean(w, weights)
    return total, metrics | ops.ratio_metrics(mixed, clipped > unclipped, rollout)


def needs(cfg: Config) -> frozenset[str]:
    return frozenset({"sample_entropy"} if cfg.mixing == "entropy" else ())


register(Algorithm(
    name="dhpo",
    family="policy-loss",
    paper="Orchestrating Tokens and Sequences: Dynamic Hybrid Policy Optimization for RLVR (Min et al., 2026, arXiv:2601.05607)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=needs,
    estimator_fields=("std_eps",),
))
