"""Turn-level statistics for multi-turn rows (Rollout.turn_ids,
turn_rewards, state_keys, num_turns): returns-to-go over turns, groups of
turns that start from the same environment state, and per-turn values
spread onto the turn's tokens.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlzoo.ops.groups import group_view

Array = jax.Array


def turn_valid(num_turns: Array, slots: int) -> Array:
    """[B, N] bool: turn slot k < num_turns[b]."""
    return jnp.arange(slots)[None, :] < num_turns[:, None]


def discounted_turn_returns(turn_rewards: Array, gamma: float) -> Array:
    """[B, N]: G_k = Σ_{l ≥ k} γ^(l − k) r_l (slots past a row's last turn hold r = 0)."""
    chex.assert_rank(turn_rewards, 2)
    slots = turn_rewards.shape[1]
    offset = jnp.arange(slots)[None, :] - jnp.arange(slots)[:, None]         # [k, l] = l − k
    discount = jnp.where(offset >= 0, jnp.power(gamma, jnp.maximum(offset, 0)), 0.0)
    return turn_rewards.astype(jnp.float32) @ discount.T


def anchor_group_advantage(values: Array, keys: Array, valid: Array, group_size: int, *, scale: bool,
                           eps: float = 1e-6) -> Array:
    """[B, N]: each valid turn's value minus the mean over its anchor group,
    divided by the group's std (ddof 1) + eps when `scale`.

    The anchor group of turn k of row b is every valid turn (any slot) of a
    row of the same task group (rows g·K .. g·K + K − 1) whose state key
    equals keys[b, k]. A singleton group gets 0 (mean = its own value; its std
    is taken as 1, as in GiGPO's code). Invalid turns get 0.
    """
    chex.assert_equal_shape([values, keys, valid])
    rows, slots = values.shape
    flat = lambda x: group_view(x, group_size).reshape(rows // group_size, group_size * slots)  # noqa: E731
    v, k, ok = flat(values.astype(jnp.float32)), flat(keys), flat(valid)
    same = (k[:, :, None] == k[:, None, :]) & ok[:, :, None] & ok[:, None, :]   # [G, K·N, K·N]
    count = jnp.sum(same, axis=2)
    mean = jnp.sum(jnp.where(same, v[:, None, :], 0.0), axis=2) / jnp.maximum(count, 1)
    centred = jnp.where(ok, v - mean, 0.0)
    if scale:
        spread = jnp.where(same, jnp.square(v[:, None, :] - mean[:, :, None]), 0.0)
        std = jnp.sqrt(jnp.sum(spread, axis=2) / jnp.maximum(count - 1, 1))
        centred = centred / (jnp.where(count > 1, std, 1.0) + eps)
    return centred.reshape(rows, slots)


def turn_values_to_tokens(per_turn: Array, turn_ids: Array) -> Array:
    """[B, T]: per_turn[b, k − 1] on the tokens of turn k (turn_ids k), 0 on the rest."""
    chex.assert_rank([per_turn, turn_ids], [2, 2])
    index = jnp.clip(turn_ids - 1, 0, per_turn.shape[1] - 1)
    return jnp.where(turn_ids > 0, jnp.take_along_axis(per_turn, index, axis=1), 0.0)
