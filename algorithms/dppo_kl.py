"""DPPO-Binary-KL: Divergence Proximal Policy Optimization with a binary
KL trust region.

Paper: Qi, Zhou, Liu, Pang, Du, Lin, Lee, "Rethinking the Trust Region in LLM
Reinforcement Learning", 2026, arXiv:2602.04879 (code: sail-sg/Stable-RL).

The sibling of `dppo_tv` (see there for the motivation) with the binary KL
divergence in place of TV. Collapsing the vocabulary to {y_t, everything
else}, with p = π_θ(y_t | ·) and p_old = π_old(y_t | ·):

    D_t = p_old log(p_old / p) + (1 − p_old) log((1 − p_old) / (1 − p))
        = KL(Bern(p_old) ‖ Bern(p))                      (≥ 0, = 0 iff p = p_old)
    M_t = 1[D_t ≤ δ_high  or  p_t ≤ p_old,t]   if Â_t > 0
          1[D_t ≤ δ_low   or  p_t ≥ p_old,t]   otherwise
    ℓ_t = −Â_t · sg(min(ρ_t, C)) · log π_θ(y_t) · sg(M_t)

A token is blocked only when it has left the KL ball *and* moved in the
direction its advantage pushes; moving back is always allowed. The 1 − p
terms use 1e-8 offsets as in verl (computed as −expm1(log p) for accuracy).

Closest relative: `dppo_tv`; with δ → ∞ and no cap the unclipped IS policy
gradient; on-policy REINFORCE with the same advantages and weights.

Equivalents: verl `actor.policy_loss.loss_mode=dppo_kl`, with `clip_ratio_low`
/ `clip_ratio_high` = δ and `clip_ratio_c` = C.

Verified against: verl `verl/trainer/ppo/core_algos.py`
(`compute_policy_loss_dppo_kl`), sail-sg/Stable-RL's copy, and verl
`examples/dppo_trainer/run_qwen3_30b_a3b_vllm_megatron.sh` (δ_KL = 0.05,
clip_ratio_c = 10000, `norm_adv_by_std_in_grpo=False`,
`loss_agg_mode=seq-mean-token-sum-norm`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    delta_low: float = pieces.setting(0.05, ge=0.0)
    """δ_low: binary-KL radius for tokens with Â ≤ 0."""
    delta_high: float = pieces.setting(0.05, ge=0.0)
    """δ_high: binary-KL radius for tokens with Â > 0."""
    is_cap: float | None = pieces.setting(None, gt=0.0)
    """C: truncated-IS cap on the (stop-gradient) ratio weight (None: no cap;
    verl's fallback is 20, the paper's script 10000)."""
    scale_rewards: bool = False
    """Divide group-centred rewards by the group std (the paper's script does not)."""
    aggregation: ops.Aggregation = "seq-mean-token-sum-norm"
    """Aggregation of the per-token loss (the paper's script)."""
    norm_len: int | None = pieces.setting(None, ge=1)
    """Constant of seq-mean-token-sum-norm (None: the rollout length T)."""


def binary_kl(old_logp, logp):
    """KL(Bern(p_old) ‖ Bern(p)) from the two log-probs of the sampled token."""
    p_old = jnp.exp(old_logp)
    rest = jnp.log((-jnp.expm1(old_logp) + 1e-8) / (-jnp.expm1(logp) + 1e-8))
    return p_old * (old_logp - logp) + (1.0 - p_old) * rest


def advantages(rollout, cfg: Config, state):
    """Â_i = R_i − mean_g R (÷ std_g R with scale_rewards), on row i's tokens."""
    return ops.group_advantage(rollout, scale=cfg.scale_rewards, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """Truncated-IS score-function loss on the tokens inside the binary-KL region."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    old = rollout.behaviour_logprobs
    divergence = binary_kl(old, stats.logprobs)
    up = stats.logprobs >= old
    down = stats.logprobs <= old
    valid = jnp.where(adv > 0, (divergence <= cfg.delta_high) | down, (divergence <= cfg.delta_low) | up)
    weight = ratio if cfg.is_cap is None else jnp.minimum(ratio, cfg.is_cap)
    total, metrics = ops.weighted_score_function_loss(
        stats, rollout, adv, jnp.where(valid, weight, 0.0), cfg.aggregation,
        clipped=~valid, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
        kl_importance_weighted=cfg.kl_importance_weighted,
        entropy_coef=cfg.entropy_coef, norm_len=cfg.norm_len,
    )
    metrics["binary_kl"] = ops.masked_mean(divergence, ops.weighted_mask(rollout))
    return total, metrics


register(Algorithm(
    name="dppo_kl",
    family="policy-loss",
    paper="Rethinking the Trust Region in LLM Reinforcement Learning (Qi et al., 2026, arXiv:2602.04879)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps"),
))
