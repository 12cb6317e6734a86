"""GSPO: Group Sequence Policy Optimization.

Paper: Zheng et al., "Group Sequence Policy Optimization", 2025,
arXiv:2507.18071 (Qwen team), section 4.

The importance ratio, the clipping and the reward all live at the level of
the whole response. The ratio is the length-normalised (geometric-mean)
sequence likelihood ratio:

    s_i(θ) = (π_θ(y_i | x) / π_old(y_i | x))^(1/|y_i|)
           = exp(1/|y_i| Σ_t log π_θ(y_{i,t} | x, y_{i,<t}) / π_old(y_{i,t} | x, y_{i,<t}))
    Â_i    = (R_i − mean_g R) / std_g R
    J(θ)   = 1/G Σ_i min(s_i(θ) Â_i, clip(s_i(θ), 1 − ε_low, 1 + ε_high) Â_i)

Whole responses are clipped (kept or dropped together). Because s_i is a
geometric mean, its deviation from 1 is small, so the clip range is tiny: the
paper uses ε_low = 3e-4, ε_high = 4e-4 (`clip_eps_low`, `clip_eps_high`). No
KL term in the paper; `kl_coef` > 0 adds GRPO's per-token KL averaged within
each response (as TRL and verl do).

Gradient: ∇J = 1/G Σ_i s_i Â_i · 1/|y_i| Σ_t ∇log π_θ(y_{i,t}) on unclipped
responses, so every token of a response gets the same weight.

Closest relative: GRPO (token-level ratio and clip). GSPO-token
(`gspo_token`) has the same value and gradient when advantages are constant
within a response and additionally allows per-token advantages.

Equivalents: TRL `GRPOTrainer(loss_type="grpo", importance_sampling_level="sequence",
epsilon=3e-4, epsilon_high=4e-4)` (with beta > 0 TRL 1.16 by default
multiplies the KL term by the importance weight, here the sequence ratio s_i
broadcast over the tokens; `kl_importance_weighted=True` weights each token's
KL by its own token ratio, the DeepSeek-V3.2 correction, so the two agree
only with TRL's `use_bias_correction_kl=False` and the option off, the
default); verl `loss_mode=gspo` (implemented in the
GSPO-token form with a forced seq-mean-token-mean aggregation, which for
sequence-constant advantages is the same loss).

Verified against: the paper (eq. 5–7, section 5.1 for ε) and verl
`verl/trainer/ppo/core_algos.py::compute_policy_loss_gspo`. Sequence
advantages are read from the token advantages as their mean over the row's
trained tokens, so any per-row advantage broadcast to tokens gives Â_i.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.RatioClip, pieces.KLPenalty, pieces.EntropyBonus, pieces.GroupStd):
    clip_eps_low: float = pieces.setting(3e-4, ge=0.0)
    """ε_low: the sequence ratio is clipped below at 1 − ε_low (the paper's 3e-4, section 5.1)."""
    clip_eps_high: float | None = pieces.setting(4e-4, ge=0.0)
    """ε_high: the sequence ratio is clipped above at 1 + ε_high (the paper's 4e-4, section 5.1)."""
    std_ddof: int = pieces.setting(1, ge=0)
    """Delta degrees of freedom of the group std."""


def advantages(rollout, cfg: Config, state):
    """Â_i: GRPO's group z-score, broadcast to the trained tokens."""
    return ops.group_advantage(rollout, eps=cfg.std_eps, ddof=cfg.std_ddof), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−J(θ): per-response clipped surrogate on s_i, mean over responses."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    seq_ratio = jnp.exp(ops.sequence_log_ratio(stats.logprobs, rollout.behaviour_logprobs, rollout.loss_mask))
    seq_adv = ops.sequence_mean(adv, rollout.loss_mask)
    per_row, clipped = ops.clipped_surrogate(seq_ratio, seq_adv, *cfg.clip_bounds)
    # A per-row value on every trained token, then the per-row token mean: exactly ℓ_i per response,
    # with the KL / entropy terms averaged inside each response like GRPO's.
    total, metrics = ops.regularised_policy_loss(
        ops.broadcast_to_tokens(per_row, rollout), stats, rollout, "seq-mean-token-mean",
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    on_tokens = ops.broadcast_to_tokens(seq_ratio, rollout)
    clipped_tokens = ops.broadcast_to_tokens(clipped.astype(jnp.float32), rollout)
    return total, metrics | ops.ratio_metrics(on_tokens, clipped_tokens, rollout)


register(Algorithm(
    name="gspo",
    family="policy-loss",
    paper="Group Sequence Policy Optimization (Zheng et al., 2025, arXiv:2507.18071)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps", "std_ddof"),
))
