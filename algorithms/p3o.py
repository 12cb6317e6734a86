"""P3O: Pairwise Proximal Policy Optimization.

Paper: Wu, Zhu, Zhang, Wen, Ramchandran and Jiao, "Pairwise Proximal Policy
Optimization: Harnessing Relative Feedback for LLM Alignment", 2023,
arXiv:2310.00212.

Reinforcement learning with relative feedback: two responses y₁, y₂ to the
same prompt are sampled from π_old and the trajectory-wise (whole-response)
pairwise policy gradient

    ∇J = E[ ½ (r(y₁) − r(y₂)) (∇log π_θ(y₁) − ∇log π_θ(y₂)) ]

is used, which depends on rewards only through their difference (invariant
to any prompt-dependent shift of the reward, the paper's "equivalent
rewards"), so no reward normalisation or critic is needed. Rewards carry the
usual KL penalty at the sampling policy, r'(y) = r(y) − β_KL Σ_t (log π_old −
log π_ref). Off-policy epochs use sequence-level importance ratios
ρ(y) = π_θ(y)/π_old(y) with PPO clipping, in one of two forms, with
A = (r'(y₁) − r'(y₂))/2:

    separate  ℓ = −min(ρ(y₁) A, clip(ρ(y₁), 1 ± ε) A) − min(ρ(y₂) (−A), clip(ρ(y₂), 1 ± ε) (−A))
    joint     ℓ = −min(ρ₁₂ A, clip(ρ₁₂, 1 ± ε) A),   ρ₁₂ = ρ(y₁)/ρ(y₂)
              (symmetrised: the mean of the (y₁, y₂) and (y₂, y₁) orderings)

averaged over pairs (ε = `clip_eps_low`; `clip_eps_high` sets an upper bound
1 + ε_high apart from it, the same by default; β_KL = `kl_coef`). "separate" is, per row, the clipped surrogate with a
sequence ratio and the partner-baseline advantage; it is computed per row
with the leave-one-out advantage K/(K − 1)(r'_i − mean r'), which for K = 2
is the pair form above and for a group of K > 2 rows equals the mean over
the group's pairs wherever no clipping is active. On-policy and unclipped (ρ = 1) both forms have exactly RLOO's
gradient for K = 2 (the tests check this against `rloo`).

Closest relatives: PPO / GSPO with a sequence-level ratio (P3O replaces the
critic by the partner), RLOO (its on-policy limit), REBEL (regresses the
pair's log-ratio onto the reward gap instead of clipping a surrogate).

Equivalents: none in TRL or verl.

Verified against: the BAIR blog post on the paper
(http://bair.berkeley.edu/blog/2023/10/16/p3o/) and a digest of the paper in
a public GitHub knowledge base (its section 4 and Algorithm 1): the pairwise
policy gradient E_{y₁,y₂}[(r(y₁) − r(y₂)) ∇(log π_θ(y₁) − log π_θ(y₂))/2]
(the ½ and the reward difference as above); reward equivalence r ~ r + δ(x)
(Definition 1); Algorithm 1 samples two responses per prompt from π_θk and
uses the trajectory reward r̂ − β KL(π_θk(y|x) ‖ π_SFT(y|x)), i.e. the KL
penalty folded into the sequence reward at the sampling policy as here; the
off-policy epochs use importance ratios from a replay buffer of π_old with
clipping, in two variants, V1 clipping the two responses separately and V2
clipping them jointly.
[inferred] The exact clipped surrogates of section 4.2 (in particular
whether the separate form also weights each term by the partner's detached
ratio, and whether the joint ratio is ρ(y₁)/ρ(y₂) as here) and the defaults
ε = 0.2 (`clip_eps_low`) and β_KL = 0.05 (`kl_coef`): section 4.2 and the hyperparameter tables were
searched for (arXiv HTML, ar5iv, the BAIR post, paper summaries and
GitHub) and not found; no official code was found.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.RatioClip, pieces.KLPenalty, pieces.Pairing):
    kl_in_loss = False  # the KL penalty is folded into the reward
    clip_mode: Literal["separate", "joint"] = "separate"
    """Clip each response's sequence ratio (separate) or the pair's relative ratio ρ(y₁)/ρ(y₂) (joint)."""
    kl_coef: float = pieces.setting(0.05, ge=0.0)
    """β_KL: KL-to-reference penalty folded into the sequence reward, not into
    the loss (0 drops the reference) [inferred default 0.05]."""
    kl_estimator: ops.KLEstimator = "k1"
    """Estimator of the per-token reward KL at the sampling policy (k1 = log π_old −
    log π_ref, the paper's sequence KL of Algorithm 1)."""


def advantages(rollout, cfg: Config, state):
    """{"advantages": r' = r − β_KL Σ_t (log π_old − log π_ref) centred within
    the group (for K = 2: A = ±(r'₁ − r'₂)/2) on each row's tokens,
    "row_targets": [B] the same per row (0 for a row with no trained token)}."""
    rewards = rollout.rewards + ops.kl_reward_penalty(rollout, cfg.kl_coef, cfg.kl_estimator).sum(axis=1)
    centred = ops.broadcast_to_tokens(ops.group_centre(rewards, rollout.group_size), rollout)
    return {"advantages": centred, "row_targets": ops.row_values(centred, rollout)}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """Clipped pairwise surrogate, averaged over the pairs of each group."""
    k = rollout.group_size
    eps_low, eps_high = cfg.clip_bounds
    log_ratio, metrics = ops.behaviour_sequence_log_ratio(stats, rollout)
    centred = targets["row_targets"]
    if cfg.clip_mode == "separate":
        seq_ratio = ops.ratio(log_ratio, 0.0)
        surrogate, clipped = ops.clipped_surrogate(seq_ratio, k / (k - 1) * centred, eps_low, eps_high)
        total = ops.aggregate_rows(surrogate, rollout)
        weight = rollout.sample_weight
    elif cfg.clip_mode == "joint":
        half_gap = 0.5 * ops.group_pair_differences(centred, k)
        seq_ratio = ops.ratio(ops.group_pair_differences(log_ratio, k), 0.0)
        forward, clipped = ops.clipped_surrogate(seq_ratio, half_gap, eps_low, eps_high)
        backward, clipped_back = ops.clipped_surrogate(jnp.swapaxes(seq_ratio, 1, 2), -half_gap, eps_low, eps_high)
        weight = ops.group_pair_weight(rollout)
        total = ops.aggregate_group_pairs(0.5 * (forward + backward), weight, rollout)
        clipped = clipped | clipped_back
    else:
        raise ValueError(f"unknown clip_mode {cfg.clip_mode!r}; choose separate or joint")
    kept = jnp.maximum(jnp.sum(weight), 1e-8)
    seq_ratio = jax.lax.stop_gradient(seq_ratio)
    return total, metrics | {
        "pg_loss": total,
        "clip_frac": jnp.sum(jnp.where(weight != 0, weight * clipped, 0.0)) / kept,
        "seq_ratio_mean": jnp.sum(jnp.where(weight != 0, weight * seq_ratio, 0.0)) / kept,
    }


register(Algorithm(
    name="p3o",
    family="self-play",
    paper="Pairwise Proximal Policy Optimization: Harnessing Relative Feedback for LLM Alignment (Wu et al., 2023, arXiv:2310.00212)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    pairwise=True,
    prepare=pair_groups,
))
