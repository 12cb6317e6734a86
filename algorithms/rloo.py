"""RLOO: REINFORCE Leave-One-Out.

Papers: Kool, van Hoof and Welling, "Buy 4 REINFORCE Samples, Get a
Baseline for Free!", ICLR 2019 workshop, https://openreview.net/forum?id=r1lgTGL5DE;
applied to RLHF by Ahmadian et al., "Back to Basics: Revisiting REINFORCE
Style Optimization for Learning from Human Feedback in LLMs", 2024,
arXiv:2402.14740.

With K responses per prompt, each response's baseline is the mean reward
of the other K − 1, which is independent of y_i and so keeps the estimator
unbiased:

    R'_i = R_i − β Σ_t (log π_old(y_{i,t}) − log π_ref(y_{i,t}))   (KL folded into the reward, β = kl_coef)
    A_i  = R'_i − 1/(K − 1) Σ_{j≠i} R'_j  =  K/(K − 1) · (R'_i − mean_j R'_j)
    L(θ) = −1/N Σ_i A_i Σ_t log π_θ(y_{i,t} | y_{i,<t})

Closest relative: REINFORCE with the group-mean baseline, which is RLOO
scaled by (K − 1)/K. The paper treats the whole response as one action
(sequence-level, hence the per-response token sum) and tunes β per task.

Equivalents: verl `adv_estimator=rloo`; TRL `RLOOTrainer` (which adds PPO
clipping for multiple updates per batch).
"""

from __future__ import annotations

import dataclasses


from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    kl_in_loss = False  # the KL penalty is folded into the reward
    kl_estimator: ops.KLEstimator = "k1"
    """Estimator of the per-token KL folded into the reward, at the behaviour
    policy (k1 = log π_old − log π_ref, the paper's sequence log-ratio)."""
    aggregation: ops.Aggregation = "seq-mean-token-sum"
    """Per-response token sum: the response is one action (the paper's sequence-level view)."""


def advantages(rollout, cfg: Config, state):
    """A_i = R'_i − mean of the other K − 1 rewards of the group."""
    rewards = rollout.rewards + ops.kl_reward_penalty(rollout, cfg.kl_coef, cfg.kl_estimator).sum(axis=1)
    adv = rewards - ops.leave_one_out_baseline(rewards, rollout.group_size)
    return ops.broadcast_to_tokens(adv, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−Σ w_t A_t log π_θ(y_t) (plain REINFORCE on the leave-one-out advantage)."""
    return ops.reinforce_loss(stats, rollout, adv, cfg.aggregation, entropy_coef=cfg.entropy_coef)


register(Algorithm(
    name="rloo",
    family="reinforce",
    paper="Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs (Ahmadian et al., 2024, arXiv:2402.14740)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    # kl_coef / kl_estimator are read by `advantages` only (the KL is folded into
    # the reward), but they are not declared estimator fields: every KL-penalised
    # loss has fields of these names, so `--advantage rloo` would clash with it.
    # Paired as an estimator, RLOO runs without the reward KL.
))
