"""REINFORCE with a group-mean baseline.

Paper: Williams, "Simple Statistical Gradient-Following Algorithms for
Connectionist Reinforcement Learning", Machine Learning 8, 1992,
https://doi.org/10.1007/BF00992696. The group-mean baseline for LLMs is
the "REINFORCE w/ baseline" of Ahmadian et al. 2024 (arXiv:2402.14740).

The score-function estimator of ∇ E_{y~π_θ}[R(y)], with the mean reward of
the K responses to the same prompt as baseline b:

    A_i = R_i − b_i,        b_i = 1/K Σ_j R_j           (baseline="group-mean")
    L(θ) = −1/N Σ_i A_i Σ_t log π_θ(y_{i,t} | y_{i,<t})

so ∇L = −1/N Σ_i A_i ∇log π_θ(y_i), the Monte-Carlo policy gradient. The
per-response token sum (aggregation seq-mean-token-sum) is what makes it
the gradient of the sequence log-probability. On-policy only: there is no
importance ratio, so every ratio-based loss in the zoo reduces to this one
when π_old = π_θ. (The group-mean baseline uses R_i itself, so the estimate
is biased by a factor (K − 1)/K; RLOO removes that.)

Equivalents: verl `loss_mode=vanilla` at ratio 1; TRL has no plain REINFORCE.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    baseline: Literal["group-mean", "none"] = "group-mean"
    """Baseline subtracted from the reward: the group mean, or none (plain REINFORCE)."""
    aggregation: ops.Aggregation = "seq-mean-token-sum"
    """Per-response token sum, mean over responses: the gradient of log π(y) (Williams' sequence-level estimator)."""


def advantages(rollout, cfg: Config, state):
    """A_i = R_i − b_i broadcast to the tokens of row i."""
    rewards = rollout.rewards
    if cfg.baseline == "group-mean":
        rewards = ops.group_centre(rewards, rollout.group_size)
    elif cfg.baseline != "none":
        raise ValueError(f"unknown baseline {cfg.baseline!r}; choose group-mean or none")
    return ops.broadcast_to_tokens(rewards, rollout), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−Σ w_t A_t log π_θ(y_t) plus regularisers."""
    return ops.reinforce_loss(
        stats, rollout, adv, cfg.aggregation,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="reinforce",
    family="reinforce",
    paper="Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement Learning (Williams, 1992, doi:10.1007/BF00992696)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("baseline",),
))
