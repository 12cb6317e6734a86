"""DPPO-Binary-TV: Divergence Proximal Policy Optimization with a binary
total-variation trust region.

Paper: Qi, Zhou, Liu, Pang, Du, Lin, Lee, "Rethinking the Trust Region in LLM
Reinforcement Learning", 2026, arXiv:2602.04879 (code: sail-sg/Stable-RL).
Not the diffusion-policy "DPPO" nor Flow-DPPO (catalogue #111, which carries
the same asymmetric divergence mask to flow-matching models).

PPO clips the probability ratio of the sampled token, a one-sample proxy of
the policy divergence that over-constrains rare tokens and under-constrains
frequent ones. DPPO masks a token's gradient when the *divergence* between
π_θ and π_old at that position leaves the trust region in the direction the
advantage pushes. The "Binary" approximation collapses the vocabulary to
{y_t, everything else}, so the TV distance is |p − p_old| with
p = π_θ(y_t | ·), p_old = π_old(y_t | ·):

    M_t = 1[p_t − p_old,t ≤ δ_high]     if Â_t > 0
          1[p_t − p_old,t ≥ −δ_low]     otherwise
    ℓ_t = −Â_t · sg(min(ρ_t, C)) · log π_θ(y_t) · sg(M_t)

so ∇ℓ_t = −Â_t min(ρ_t, C) M_t ∇log π_θ(y_t): the importance-weighted policy
gradient on tokens inside the trust region, zero on tokens that already moved
too far in the advantage's direction (a token moving back is never blocked).
C is a truncated-IS cap that replaces dual clipping (paper §5.4 recommends a
large value; the paper's run script sets 10000, i.e. none, the default here).
Advantages are group-centred rewards without std scaling and the loss is
aggregated seq-mean-token-sum-norm, as in the paper's run script.

Closest relative: GRPO/PPO with the ratio clip replaced by a TV mask; with
δ → ∞ and no cap it is the unclipped IS policy gradient, and on-policy
(ρ = 1, p = p_old) it is REINFORCE with the same advantages and weights.
Sibling: `dppo_kl` (binary-KL trust region).

Equivalents: verl `actor.policy_loss.loss_mode=dppo_tv`, with `clip_ratio_low`
/ `clip_ratio_high` = δ and `clip_ratio_c` = C.

Verified against: verl `verl/trainer/ppo/core_algos.py`
(`compute_policy_loss_dppo_tv`), the same function in sail-sg/Stable-RL, and
verl `examples/dppo_trainer/run_qwen3_30b_a3b_vllm_megatron.sh` (δ_TV = 0.15,
clip_ratio_c = 10000, `norm_adv_by_std_in_grpo=False`,
`loss_agg_mode=seq-mean-token-sum-norm`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.algorithms import dppo_kl
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(dppo_kl.Config):
    """The sibling's settings; δ bounds the probability gap |p − p_old| here."""

    delta_low: float = pieces.setting(0.15, ge=0.0)
    """δ_low: a token with Â ≤ 0 is blocked once p − p_old < −δ_low."""
    delta_high: float = pieces.setting(0.15, ge=0.0)
    """δ_high: a token with Â > 0 is blocked once p − p_old > δ_high."""


advantages = dppo_kl.advantages  # the same group-centred advantages


def loss(stats, rollout, adv, cfg: Config, state):
    """Truncated-IS score-function loss on the tokens inside the binary-TV region."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    shift = jnp.exp(stats.logprobs) - jnp.exp(rollout.behaviour_logprobs)
    valid = jnp.where(adv > 0, shift <= cfg.delta_high, shift >= -cfg.delta_low)
    weight = ratio if cfg.is_cap is None else jnp.minimum(ratio, cfg.is_cap)
    return ops.weighted_score_function_loss(
        stats, rollout, adv, jnp.where(valid, weight, 0.0), cfg.aggregation,
        clipped=~valid, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
        kl_importance_weighted=cfg.kl_importance_weighted,
        entropy_coef=cfg.entropy_coef, norm_len=cfg.norm_len,
    )


register(Algorithm(
    name="dppo_tv",
    family="policy-loss",
    paper="Rethinking the Trust Region in LLM Reinforcement Learning (Qi et al., 2026, arXiv:2602.04879)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("scale_rewards", "std_eps"),
))
