"""REINFORCE++-baseline: group-mean baseline with global advantage whitening.

Paper: Hu et al., "REINFORCE++: An Efficient RLHF Algorithm with Robustness
to Both Prompt and Reward Models" (first version "REINFORCE++: A Simple and
Efficient Approach for Aligning Large Language Models"), 2025,
arXiv:2501.03262; the "-baseline" variant for K > 1 samples per prompt.

GRPO normalises each group by its own std, which over-weights prompts whose
K rewards barely differ and makes the advantage scale prompt-dependent.
REINFORCE++-baseline subtracts the group mean only, then whitens over the
whole batch:

    A_i      = R_i − mean_g R                                 (group baseline)
    Â_{i,t}  = (A_i − mean_batch A) / std_batch A             (over all trained tokens of the batch)
    L(θ)     = −1/Σ|o| Σ_{i,t} min(ρ_{i,t} Â_{i,t}, clip(ρ_{i,t}, 1 − ε, 1 + ε) Â_{i,t})

with PPO's token-level clip (ε = 0.2) and token-mean aggregation. Batch
statistics are over tokens (each row weighs by its length), with the biased
variance + 1e-8 (verl's `masked_whiten` uses the unbiased variance: the two
differ by a factor √(N/(N − 1)), N the number of trained tokens).

The KL to the reference is not in the reward for the -baseline variant; its
recipes add a KL loss (OpenRLHF `--use_kl_loss --kl_estimator k2`) with a
task-specific coefficient, so `kl_coef` defaults to 0 and `kl_estimator` to
k2 [inferred: from the OpenRLHF recipe, not the paper].

The loss is GRPO's clipped surrogate, so this file is the estimator only:
`get_algorithm("reinforce_pp")` pairs it with `grpo`'s loss at `kl_coef` = 0,
`kl_estimator` = k2 and aggregation token-mean (ε = 0.2, no dual clip).

Closest relative: GRPO (std per group instead of per batch). For one group
of equal-length responses the advantage is GRPO's with the biased std
(`std_ddof` = 0) and ε_std → 0.

Equivalents: verl `adv_estimator=reinforce_plus_plus_baseline`; OpenRLHF
`--advantage_estimator reinforce_baseline`. No TRL equivalent.

Verified against: verl `verl/trainer/ppo/core_algos.py::
compute_reinforce_plus_plus_baseline_outcome_advantage` (group mean, then
`masked_whiten` over the response mask) and `compute_policy_loss_vanilla`.
"""

from __future__ import annotations

import dataclasses

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.ConfigBase):
    whiten_eps: float = pieces.setting(1e-8, ge=0.0)
    """ε added to the batch variance before the square root."""


def advantages(rollout, cfg: Config, state):
    """Â = whiten(R − mean_g R) over the trained tokens of the batch."""
    centred = ops.group_advantage(rollout, scale=False)
    return ops.masked_whiten(centred, ops.weighted_mask(rollout), cfg.whiten_eps), state


register(Algorithm(
    name="reinforce_pp",
    family="advantage",
    paper="REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both Prompt and Reward Models (Hu et al., 2025, arXiv:2501.03262)",
    Config=Config,
    advantages=advantages,
    loss=None,
    default_loss="grpo",
    loss_defaults={"kl_coef": 0.0, "kl_estimator": "k2", "aggregation": "token-mean"},
))
