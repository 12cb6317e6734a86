"""Preference pairs: a pair is a group of two rows (group_size = 2); the
chosen row y_w has the higher reward (see `pair_preference`).

`pair_scores` gives the per-pair sequence scores every direct-alignment loss
starts from, and `preference_loss` aggregates a per-pair loss and logs the
usual reward metrics. Turning groups of K on-policy samples into pairs is a
Rollout transform: `rlzoo.experience.row_transforms.make_pairs`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp

from rlzoo.ops.aggregation import aggregate_pairs, weighted_mask
from rlzoo.ops.groups import group_centre, group_view
from rlzoo.ops.primitives import (
    broadcast_to_tokens, kl_estimate, masked_mean, row_values, sequence_mean, sequence_sum, token_uniform,
)
from rlzoo.rollout import PolicyStats, Rollout, validate_stats

PairMode = Literal["best_vs_worst", "all_pairs"]
"""How preference pairs are built from a group of K > 2 sampled rows."""

Array = jax.Array


# --------------------------------------------------------------------------
# Pair signs and per-pair values
# --------------------------------------------------------------------------

def pair_preference(rollout: Rollout) -> tuple[Array, Array]:
    """For groups of K = 2: (sign [B], pair_weight [B // 2]).

    sign is +1 for the chosen row (higher reward), −1 for the rejected one,
    0 for both rows of a tie; pair_weight is 1 for a decided pair whose rows
    are both kept (sample_weight > 0) and 0 otherwise.
    """
    if rollout.group_size != 2:
        raise ValueError(
            f"pairwise losses need groups of two rows (group_size=2), got {rollout.group_size}"
        )
    rewards = group_view(rollout.rewards, 2)
    sign = jnp.sign(rewards - rewards[:, ::-1]).reshape(-1)
    kept = jnp.min(group_view(rollout.sample_weight, 2), axis=1)
    decided = (rewards[:, 0] != rewards[:, 1]).astype(jnp.float32)
    return sign, kept * decided


def pair_margin(per_row: Array, sign: Array) -> Array:
    """[G]: chosen − rejected of a per-row quantity, Σ_{rows of the pair} sign·x."""
    chex.assert_rank([per_row, sign], 1)
    chex.assert_equal_shape([per_row, sign])
    return jnp.sum(group_view(sign * per_row, 2), axis=1)


def split_pairs(per_row: Array, sign: Array) -> tuple[Array, Array]:
    """([G], [G]): the chosen and the rejected row's value of a per-row
    quantity (0 for both rows of a tie)."""
    chosen = pair_margin(per_row, jnp.maximum(sign, 0.0))
    rejected = -pair_margin(per_row, jnp.minimum(sign, 0.0))
    return chosen, rejected


# --------------------------------------------------------------------------
# Sequence scores
# --------------------------------------------------------------------------

class PairScores(NamedTuple):
    """Per-pair sequence scores s(y) of the chosen and rejected rows.

    s(y) = Σ_t log π_θ(y_t) − log π_ref(y_t) over trained tokens (the DPO
    log-ratio h_θ), or the per-token mean of that with `length_normalise`, or
    the same without the reference term when reference-free. Tied or dropped
    pairs have weight 0 and scores 0."""

    chosen: Array
    """[G] s(y_w)."""
    rejected: Array
    """[G] s(y_l)."""
    weight: Array
    """[G] 1 for a decided pair whose rows are both kept, 0 otherwise."""
    sign: Array
    """[B] +1 chosen row, −1 rejected row, 0 both rows of a tie."""
    per_row: Array
    """[B] s of every row (before pairing)."""

    @property
    def margin(self) -> Array:
        """[G] Δ = s(y_w) − s(y_l)."""
        return self.chosen - self.rejected


def sequence_scores(
    logp: Array,
    rollout: Rollout,
    *,
    reference: bool = True,
    length_normalise: bool = False,
) -> Array:
    """[B]: Σ_t (log π − log π_ref) over each row's trained tokens; the
    per-token mean with `length_normalise`; without the reference term when
    `reference` is False (SimPO-style scores). An empty row scores 0."""
    per_token = logp - rollout.ref_logprobs if reference else logp
    if length_normalise:
        return sequence_mean(per_token, rollout.loss_mask)
    return sequence_sum(per_token, rollout.loss_mask)


def pair_scores(
    stats: PolicyStats,
    rollout: Rollout,
    *,
    reference: bool = True,
    length_normalise: bool = False,
) -> PairScores:
    """The current policy's `sequence_scores` split into chosen and rejected."""
    validate_stats(stats, rollout)
    sign, weight = pair_preference(rollout)
    per_row = sequence_scores(stats.logprobs, rollout, reference=reference, length_normalise=length_normalise)
    chosen, rejected = split_pairs(per_row, sign)
    return PairScores(chosen, rejected, weight, sign, per_row)


# --------------------------------------------------------------------------
# Pairwise losses
# --------------------------------------------------------------------------

def logistic_pair_loss(z: Array, w_pos: Array | float = 1.0, w_neg: Array | float = 0.0) -> Array:
    """w₊ · (−log σ(z)) + w₋ · (−log σ(−z)), elementwise and stable for any z.

    (1, 0): DPO; (1 − ε, ε): label smoothing / soft label 1 − ε;
    ((1 − ε)/(1 − 2ε), −ε/(1 − 2ε)): robust DPO's unbiased loss."""
    return -w_pos * jax.nn.log_sigmoid(z) - w_neg * jax.nn.log_sigmoid(-z)


def preference_loss(
    per_pair: Array,
    scores: PairScores,
    stats: PolicyStats,
    rollout: Rollout,
    beta: Array | float,
    extra: dict[str, Array] | None = None,
    loss_weight: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Aggregate a per-pair loss over the minibatch's pairs (`aggregate_pairs`
    with `loss_weight`, default the pair weights) and log the implicit-reward
    metrics (β·s, no gradient): reward_chosen, reward_rejected, reward_margin
    and reward_accuracy over decided pairs, plus KL to the reference (k3,
    masked mean) and entropy when available."""
    total = aggregate_pairs(per_pair, scores.weight if loss_weight is None else loss_weight, rollout)
    weight = scores.weight
    decided = jnp.maximum(jnp.sum(weight), 1.0)
    chosen = jax.lax.stop_gradient(beta * scores.chosen)
    rejected = jax.lax.stop_gradient(beta * scores.rejected)
    metrics = {
        "pref_loss": total,
        "reward_chosen": jnp.sum(weight * chosen) / decided,
        "reward_rejected": jnp.sum(weight * rejected) / decided,
        "reward_margin": jnp.sum(weight * (chosen - rejected)) / decided,
        "reward_accuracy": jnp.sum(weight * (chosen > rejected)) / decided,
    }
    mask = weighted_mask(rollout)
    if rollout.ref_logprobs is not None:
        kl = jax.lax.stop_gradient(kl_estimate(stats.logprobs, rollout.ref_logprobs, "k3"))
        metrics["kl"] = masked_mean(kl, mask)
    if stats.entropy is not None:
        metrics["entropy"] = masked_mean(jax.lax.stop_gradient(stats.entropy), mask)
    return total, metrics | dict(extra or {})


# --------------------------------------------------------------------------
# Pair advantages
# --------------------------------------------------------------------------

def pair_sign_advantage(rollout: Rollout) -> Array:
    """[B, T]: the preference sign (+1 chosen, −1 rejected, 0 tie) on each
    row's trained tokens, the "advantage" a pairwise loss without per-pair
    state hands itself (and what the trainer logs)."""
    sign, _ = pair_preference(rollout)
    return broadcast_to_tokens(sign, rollout)


def pair_advantage(per_pair: Array, sign: Array, rollout: Rollout) -> Array:
    """[B, T]: sign · v_pair on each row's trained tokens, the advantage a
    pairwise method hands its loss when a per-pair value v ≥ 0 (a filter
    weight, a soft label) is computed outside the gradient."""
    chex.assert_rank([per_pair, sign], 1)
    chex.assert_shape(sign, (2 * per_pair.shape[0],))
    return broadcast_to_tokens(sign * jnp.repeat(per_pair, 2), rollout)


def pair_uniform(seed: Array | int, rollout: Rollout) -> Array:
    """[G] pseudo-random numbers in [0, 1), one per pair, from `token_uniform`
    at each row's first trained token and symmetric in the pair's two rows:
    reordering pairs or the rows of a pair reorders the numbers, and jit,
    eager, sharded and microbatched runs agree."""
    per_row = row_values(token_uniform(seed, rollout), rollout)
    return jnp.mod(jnp.sum(group_view(per_row, 2), axis=1), 1.0)


# --------------------------------------------------------------------------
# Ready-made `advantages` for pairwise and self-play losses
# --------------------------------------------------------------------------

def pair_sign_targets(rollout: Rollout, cfg, state):
    """`Algorithm.advantages` of a pairwise loss without an estimator: the
    preference sign of each row on its tokens (+1 chosen, −1 rejected, 0
    tie), which the loss pushes along and the trainer logs."""
    return pair_sign_advantage(rollout), state


def centred_reward_targets(rollout: Rollout, cfg, state):
    """`Algorithm.advantages` of a self-play regression on reward differences:
    {"advantages": the rewards centred within the group, on each row's tokens
    (what the trainer logs), "row_targets": [B] the same per row (0 for a row
    with no trained token)}."""
    centred = broadcast_to_tokens(group_centre(rollout.rewards, rollout.group_size), rollout)
    return {"advantages": centred, "row_targets": row_values(centred, rollout)}, state
