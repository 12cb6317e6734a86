"""DISPO: decoupled up/down clipping of CISPO's importance weight for correct
and incorrect responses.

Paper: Karaman, Rawal, Shakiah, Ghavamzadeh, Hong, Biswas, Zhou, "DISPO:
Enhancing Training Efficiency and Stability in Reinforcement Learning for
Large Language Model Mathematical Reasoning", 2026, arXiv:2602.00983
(AISTATS 2026).

A REINFORCE-style loss (CISPO's): the importance weight is clipped and its
gradient stopped, so clipped tokens keep a (truncated) policy gradient:

    w_t = clip(ρ_t, 1 − ε_down^s, 1 + ε_up^s),   s = + if Â_t > 0 (correct), − otherwise
    ℓ_t = −sg(w_t) · Â_t · log π_θ(y_t)                  (token-mean over the batch)

Four regimes: for correct responses, weights > 1 (ε_up^+) raise the token
entropy (exploration) and weights < 1 (ε_down^+) lower it (distillation);
for incorrect responses, too tight ε_up^− leads to repetitive outputs and
too tight ε_down^− to vanishing response lengths. With all four bounds equal
to CISPO's the loss is CISPO's; at ρ ≡ 1 (inside every window) it is
REINFORCE with GRPO's advantages.

Closest relative: CISPO (one pair of bounds for every token). verl:
`loss_mode=cispo` with sign-dependent bounds (no upstream mode).

Verified against: the paper's abstract and introduction (arXiv HTML v1,
https://arxiv.org/html/2602.00983v1; OpenReview ntslllFNE7): a REINFORCE-style
(CISPO) loss whose IS weight has separate up/down clip bounds for the tokens
of correct and of incorrect responses, four bounds in all.
[inferred] Two items could not be checked: (1) "correct" is read as Â_t > 0
(for 0/1 rewards with GRPO advantages these are exactly the correct rows of
mixed groups; a zero advantage adds nothing either way); (2) the four default
bounds, which are not from the paper: correct (ε_up, ε_down) = (0.28, 0.2) as
DAPO's clip-higher, incorrect (ε_up, ε_down) = (4.0, 1.0), i.e. CISPO-like
loose truncation (weights in [0, 5]) so the incorrect-response regimes are
never tight. Searched: the arXiv HTML/abstract pages, OpenReview, Hugging
Face papers and paper-summary sites (only the abstract and introduction are
stored), and GitHub code for a DISPO implementation (none found); the
method section, the correctness test and the tuned bounds were not reachable.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.GroupStd, pieces.KLPenalty, pieces.EntropyBonus, pieces.TokenAggregation):
    eps_up_correct: float = pieces.setting(0.28, ge=0.0)
    """ε_up^+: weights of correct-response (Â > 0) tokens are capped at 1 + ε_up^+ [inferred default]."""
    eps_down_correct: float = pieces.setting(0.2, ge=0.0, le=1.0)
    """ε_down^+: weights of correct-response tokens are floored at 1 − ε_down^+ [inferred default]."""
    eps_up_incorrect: float = pieces.setting(4.0, ge=0.0)
    """ε_up^−: weights of incorrect-response (Â ≤ 0) tokens are capped at 1 + ε_up^− [inferred default]."""
    eps_down_incorrect: float = pieces.setting(1.0, ge=0.0, le=1.0)
    """ε_down^−: weights of incorrect-response tokens are floored at 1 − ε_down^− [inferred default]."""


def advantages(rollout, cfg: Config, state):
    """GRPO's group z-score."""
    return ops.group_advantage(rollout, eps=cfg.std_eps), state


def loss(stats, rollout, adv, cfg: Config, state):
    """−sg(clip(ρ, 1 − ε_down^s, 1 + ε_up^s)) Â log π with s the sign of Â."""
    stats, rollout, adv = ops.loss_inputs(stats, rollout, adv)
    ratio = ops.ratio(stats.logprobs, rollout.behaviour_logprobs)
    correct = adv > 0
    low = jnp.where(correct, 1.0 - cfg.eps_down_correct, 1.0 - cfg.eps_down_incorrect)
    high = jnp.where(correct, 1.0 + cfg.eps_up_correct, 1.0 + cfg.eps_up_incorrect)
    weight = jnp.clip(ratio, low, high)
    return ops.weighted_score_function_loss(
        stats, rollout, adv, weight, cfg.aggregation, clipped=weight != ratio,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, entropy_coef=cfg.entropy_coef,
        kl_importance_weighted=cfg.kl_importance_weighted,
    )


register(Algorithm(
    name="dispo",
    family="policy-loss",
    paper="DISPO: Enhancing Training Efficiency and Stability in Reinforcement Learning for Large Language Model Mathematical Reasoning (Karaman et al., 2026, arXiv:2602.00983)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    estimator_fields=("std_eps",),
))
