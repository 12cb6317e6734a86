"""COPO: Consistency-Aware Policy Optimization.

Paper: Jinghang Han, Jiawei Chen, Hang Shao et al., "COPO: Consistency-Aware
Policy Optimization", 2025, arXiv:2508.04138. Code:
https://github.com/hijih/copo-code.

When all K responses to a prompt agree (all right or all wrong), GRPO's
group advantage is 0 and the prompt teaches nothing. COPO adds a global
advantage that compares prompts with each other, and blends it with GRPO's
local advantage according to how consistent the group's final answers are:

    A^loc_i  = (r_i − mean_g r) / (std_g r + ε)                      GRPO, within the group
    R^glb_g  = mean_g r  [· (1 − λ_K H_g), λ_K = (1 − 1/K)/log2 K]   global reward of the prompt
    A^glb_g  = (R^glb_g − mean_G R^glb) / (std_G R^glb + ε)           z-score across the batch's groups
    H_g      = −Σ_v p_v log2 p_v                                      entropy of the group's answers
    w_i      = σ(k (H_g − b)) · 1[r_i ≠ 0]                            soft blending weight ("soft with zero")
    ℓ_t      = (1 − w_i) · ℓ_clip(A^glb_g) + w_i · ℓ_clip(A^loc_i)

where ℓ_clip(A) = −min(ρA, clip(ρ, 1 − ε, 1 + ε)A) with verl's dual clip
(c = 3) on A < 0. A consistent group (low answer entropy) learns mostly from
the global term, which is non-zero even when all its outcomes are equal; an
inconsistent one mostly from GRPO's. Rows with reward 0 use the global term
only (the released `run_copo.sh`: `global_flg=soft-with-zero`, k = 5, b = 1,
no consistency coefficient, ε = 0.2, seq-mean-token-mean, no KL).

The blended advantage. `advantages` returns Â_i = (1 − w_i)A^glb_g + w_i A^loc_i,
the advantage the policy sees on-policy. Because ℓ_clip is positively
homogeneous in A (ℓ_clip(cA) = c·ℓ_clip(A) for c ≥ 0, dual clip included),
the official blend of two losses equals ℓ_clip(Â − w A^loc) + ℓ_clip(w A^loc),
so `loss` recomputes the local part w·A^loc (a per-group quantity, identical
in every microbatch) and takes the global part as Â − w·A^loc. This
reproduces the official loss exactly, also where the two advantages have
opposite signs and clipping is active (tested against a direct computation).

Answers: H_g is computed over `Rollout.answer_ids`, the identity of each
row's extracted final answer, which the trainer fills from the task's
`answer` (as the official reward function returns the extracted answer;
rows with no extractable answer share the id −1, one more "answer").
`answer_key="reward"` uses the reward as the key instead, for data without
answers [our fallback, not in the paper]: for binary rewards H_g is then
the entropy of the correct/incorrect split, the coarsest answer partition
(distinct wrong answers only raise H), so it is COPO's most global-leaning
case: H_g ≤ 1 bit, hence w ≤ σ(k(1 − b)) = 0.5 at the released k = 5,
b = 1, and w ≈ 0.09 for 1 correct of 8 (tested). In our arithmetic
learning benchmark that fallback learned less than GRPO (0.48 vs 0.56).
The reward-0 rule reads "reward ≠ 0" as "correct", as the official 0/1
accuracy reward does; with shaped rewards (e.g. a format bonus) a wrong but
well-formed row is not 0 and keeps its local term.

Invariants: w ∈ [0, 1], increasing in H_g; all-equal group: A^loc = 0 but
the global part is non-zero (unless every group has the same mean reward),
which is the method's point and breaks the zero-advantage rule on purpose;
the global advantages have zero mean over groups; adding one constant to
every reward of the batch leaves Â unchanged (with the reward-0 rule off,
since it looks at raw rewards). With w ≡ 1 (b → −∞) and no reward-0 rule,
COPO is GRPO with dual clip (tested, loss and gradient).

Closest relative: GRPO. Equivalents: none in TRL or mainline verl; the
official verl fork (`compute_grpo_outcome_advantage_with_global`,
`compute_policy_loss_with_global`).

Verified against: `hijih/copo-code` `verl/trainer/ppo/core_algos.py`
(`compute_score_global`: R^glb = mean reward, × (1 − λ_K H) only with
`reward_coef_flg`, H in bits over the extracted answers;
`compute_grpo_outcome_advantage_with_global`: local z-score and global
z-score over the batch's groups, both torch.std (ddof 1) + 1e-6;
`compute_policy_loss_with_global`, "soft-with-zero": local weight
σ(k(H − b))·1[r ≠ 0], dual clip c = 3), `verl/workers/actor/dp_actor.py`,
`verl/utils/reward_score/multi-reward.py` (0/1 accuracy reward plus the
extracted answer) and `verl/run_copo.sh` (k = 5, b = 1, ε = 0.2,
seq-mean-token-mean, no KL, no entropy bonus, `reward_coef_flg=false`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.PolicyLoss, pieces.DualClip, pieces.GroupStd):
    blend_k: float = pieces.setting(5.0, ge=0.0)
    """k: slope of the blending weight σ(k (H − b))."""
    blend_b: float = 1.0
    """b: entropy (bits) at which local and global weigh equally."""
    zero_reward_global_only: bool = True
    """Rows with reward 0 use only the global term (official "soft with zero")."""
    consistency_coef: bool = False
    """Multiply the global reward by (1 − λ_K H) (official `reward_coef_flg`, off in the released run)."""
    answer_key: Literal["answer_ids", "reward"] = "answer_ids"
    """What H_g is the entropy of: the extracted answers (official) or the rewards (fallback)."""
    dual_clip: float | None = pieces.setting(3.0, gt=1.0)
    """Dual-clip bound c on negative-advantage tokens (the released run's verl `clip_ratio_c` = 3)."""
    aggregation: ops.Aggregation = "seq-mean-token-mean"
    """How per-token losses are averaged (the released run's seq-mean-token-mean)."""


def local_part(rollout, cfg: Config):
    """([B] A^loc, [B] w): GRPO's advantage and the blending weight, both per group."""
    k = rollout.group_size
    keys = rollout.answer_ids if cfg.answer_key == "answer_ids" else rollout.rewards
    entropy = ops.group_value_entropy(keys, k)
    weight = jax.nn.sigmoid(cfg.blend_k * (entropy - cfg.blend_b))
    if cfg.zero_reward_global_only:
        weight = jnp.where(rollout.rewards != 0, weight, 0.0)
    return ops.group_zscore(rollout.rewards, k, cfg.std_eps), weight, entropy


def global_advantage(rollout, cfg: Config, entropy):
    """[B]: the batch z-score of the groups' global rewards."""
    k = rollout.group_size
    reward = ops.group_mean(rollout.rewards, k)
    if cfg.consistency_coef and k > 1:
        reward = reward * (1.0 - (1.0 - 1.0 / k) / math.log2(k) * entropy)
    per_group = ops.group_view(reward, k)[:, 0]
    if per_group.shape[0] < 2:
        return jnp.zeros_like(reward)
    z = (per_group - per_group.mean()) / (jnp.std(per_group, ddof=1) + cfg.std_eps)
    # Equal global rewards give 0 exactly (their float mean can be an ulp off, which ε would amplify).
    z = jnp.where(jnp.max(per_group) == jnp.min(per_group), 0.0, z)
    return jnp.repeat(z, k)


def advantages(rollout, cfg: Config, state):
    """Â_i = (1 − w_i) A^glb_g + w_i A^loc_i."""
    local, weight, entropy = local_part(rollout, cfg)
    adv = (1.0 - weight) * global_advantage(rollout, cfg, entropy) + weight * local
    return ops.broadcast_to_tokens(adv, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """ℓ_clip(Â − w·A^loc) + ℓ_clip(w·A^loc) = (1 − w)ℓ_clip(A^glb) + w·ℓ_clip(A^loc), plus regularisers."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    local, weight, _ = local_part(rollout, cfg)
    local_adv = ops.broadcast_to_tokens(weight * local, rollout)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    eps_low, eps_high = cfg.clip_bounds
    pg_global, clipped_global = ops.clipped_surrogate(ratio, adv - local_adv, eps_low, eps_high, cfg.dual_clip)
    pg_local, clipped_local = ops.clipped_surrogate(ratio, local_adv, eps_low, eps_high, cfg.dual_clip)
    total, metrics = ops.regularised_policy_loss(
        pg_global + pg_local, stats, rollout, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )
    metrics["clip_frac_global"] = ops.masked_mean(clipped_global.astype(jnp.float32), ops.weighted_mask(rollout))
    metrics["blend_weight"] = ops.masked_mean(weight, rollout.sample_weight)
    return total, metrics | ops.ratio_metrics(ratio, clipped_local, rollout)


register(Algorithm(
    name="copo",
    family="advantage",
    paper="COPO: Consistency-Aware Policy Optimization (Han et al., 2025, arXiv:2508.04138)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    needs=lambda cfg: frozenset({"answer_ids"} if cfg.answer_key == "answer_ids" else ()),
    # The loss recomputes the blending weight w and A^loc from the rollout, so
    # only the consistency coefficient of the global reward is the estimator's.
    estimator_fields=("consistency_coef",),
))
