"""REFUEL: Regressing the Relative Future.

Paper: Gao et al., "Regressing the Relative Future: Efficient Policy
Optimization for Multi-turn RLHF", 2024, arXiv:2410.04612.

Multi-turn RLHF as a sequence of regressions on self-generated dialogues.
For a turn h, the history s_h is rolled in with the current iterate π_t;
two turn-h responses y, y' are drawn from π_t(· | s_h) and each dialogue is
finished with π_t, giving Monte-Carlo estimates Q̂(s_h, y), Q̂(s_h, y') of
the relative future. Then

    s_θ(y)   = log π_θ(y | s_h) − log π_t(y | s_h)        (the turn-h tokens only)
    ℓ(y, y') = ((s_θ(y) − s_θ(y')) − η (Q̂(s_h, y) − Q̂(s_h, y')))²

averaged over pairs. Data contract: the two rows of a pair share the prompt
and history s_h; `loss_mask` marks only the turn-h response (the history,
user turns and the π_t roll-out after turn h are untrained context);
`behaviour_logprobs` are π_t's log-probs; Q̂ is `Rollout.rewards` (the
dialogue's return), or, with q_estimate="reward-to-go", the sum of
`token_rewards` from the first trained token on. The turn-h history is
shared, so rewards earned before turn h cancel in Q̂(y) − Q̂(y') either way.

With a single turn (H = 1), Q̂ is the response's reward and REFUEL is REBEL
without a KL penalty: both call `ops.behaviour_log_ratio_regression` and the
tests check equal loss and gradient. What REFUEL adds is the data (turn-h
pairs with Monte-Carlo futures), not a new loss. Same properties as REBEL:
loss 0 iff Δs = η ΔQ̂; invariant to adding one constant to both Q̂; symmetric
in (y, y').

Equivalents: none in TRL or verl. Verified against the official code,
github.com/ZhaolinGao/REFUEL setting_one/refuel.py (loss
`(Δ(new_logprob − logprob) − eta·(chosen_reward − reject_reward))²` over
the turn mask, sequence-summed log-probs, no KL penalty, eta = 1.0).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from rlzoo import ops, pieces
from rlzoo.experience.prepare import pair_groups
from rlzoo.registry import Algorithm, register


@dataclasses.dataclass(frozen=True)
class Config(pieces.Pairing):
    eta: float = pieces.setting(1.0, gt=0.0)
    """η: target log-ratio difference per unit of Q̂ difference (official code default)."""
    q_estimate: Literal["outcome", "reward-to-go"] = "outcome"
    """Q̂ source: the row's `rewards` (the finished dialogue's return), or the
    sum of `token_rewards` from the first trained (turn-h) token on."""


def _q_hat(rollout, cfg: Config):
    if cfg.q_estimate == "outcome":
        return rollout.rewards
    if cfg.q_estimate == "reward-to-go":
        positions = jnp.arange(rollout.seq_len)
        first = jnp.argmax(rollout.loss_mask, axis=1)
        future = positions[None, :] >= first[:, None]
        return jnp.sum(jnp.where(future, rollout.token_rewards, 0.0), axis=1)
    raise ValueError(f"unknown q_estimate {cfg.q_estimate!r}; choose outcome or reward-to-go")


def advantages(rollout, cfg: Config, state):
    """{"advantages": Q̂ centred within the group (keeps every difference
    Q̂_i − Q̂_j) on each row's tokens, "row_targets": [B] the same per row
    (0 for a row with no trained token)}."""
    q_hat = ops.broadcast_to_tokens(ops.group_centre(_q_hat(rollout, cfg), rollout.group_size), rollout)
    return {"advantages": q_hat, "row_targets": ops.row_values(q_hat, rollout)}, state


def loss(stats, rollout, targets, cfg: Config, state):
    """Mean over pairs of ((s_θ(y_i) − s_θ(y_j)) − η (A_i − A_j))², A = `row_targets`."""
    return ops.behaviour_log_ratio_regression(stats, rollout, cfg.eta * targets["row_targets"])


register(Algorithm(
    name="refuel",
    family="self-play",
    paper="Regressing the Relative Future: Efficient Policy Optimization for Multi-turn RLHF (Gao et al., 2024, arXiv:2410.04612)",
    Config=Config,
    advantages=advantages,
    loss=loss,
    plain_advantage=False,
    needs=lambda cfg: frozenset({"token_rewards"} if cfg.q_estimate == "reward-to-go" else set()),
    pairwise=True,
    prepare=pair_groups,
))
