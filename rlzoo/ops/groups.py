"""Group statistics: rows g·K .. g·K + K − 1 of a batch form group g (the K
samples of one prompt), G = B / K groups.

Group views, means, standard deviations, z-scores and leave-one-out
baselines; statistics over the masked rows of each group; differences and
win rates over the pairs of rows of a group.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

from rlzoo.ops.primitives import broadcast_to_tokens
from rlzoo.rollout import Rollout

Array = jax.Array


# --------------------------------------------------------------------------
# Group views and moments
# --------------------------------------------------------------------------

def group_view(x: Array, group_size: int) -> Array:
    """[B, ...] -> [G, K, ...]."""
    chex.assert_is_divisible(x.shape[0], group_size)
    return x.reshape((x.shape[0] // group_size, group_size) + x.shape[1:])


def group_mean(x: Array, group_size: int) -> Array:
    """[B]: the mean of each row's group, repeated over the group."""
    chex.assert_rank(x, 1)
    grouped = group_view(x, group_size)
    return jnp.broadcast_to(grouped.mean(axis=1, keepdims=True), grouped.shape).reshape(x.shape)


def group_std(x: Array, group_size: int, ddof: int = 1) -> Array:
    """[B]: the standard deviation of each row's group (divisor K − ddof, at least 1)."""
    chex.assert_rank(x, 1)
    grouped = group_view(x, group_size)
    centred = grouped - grouped.mean(axis=1, keepdims=True)
    var = jnp.sum(jnp.square(centred), axis=1, keepdims=True) / max(group_size - ddof, 1)
    return jnp.broadcast_to(jnp.sqrt(var), grouped.shape).reshape(x.shape)


def group_centre(x: Array, group_size: int) -> Array:
    """[B]: x − mean of its group (Dr.GRPO's advantage)."""
    return x - group_mean(x, group_size)


def group_zscore(x: Array, group_size: int, eps: float = 1e-6, ddof: int = 1) -> Array:
    """[B]: (x − mean_g) / (std_g + eps) (GRPO's advantage). All-equal groups give 0."""
    chex.assert_rank(x, 1)
    return group_centre(x, group_size) / (group_std(x, group_size, ddof) + eps)


def leave_one_out_baseline(x: Array, group_size: int) -> Array:
    """[B]: mean of the other K − 1 rows of the group, (Σ_g x − x_i) / (K − 1).

    For K = 1 there are no other rows and the baseline is 0."""
    chex.assert_rank(x, 1)
    if group_size < 2:
        return jnp.zeros_like(x)
    grouped = group_view(x, group_size)
    others = (grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)
    return others.reshape(x.shape)


def group_advantage(rollout: Rollout, *, scale: bool = True, eps: float = 1e-6, ddof: int = 1) -> Array:
    """[B, T]: GRPO's group-relative advantage on each row's trained tokens,
    (R − mean_g R) / (std_g R + eps) with `scale`, R − mean_g R without."""
    if scale:
        adv = group_zscore(rollout.rewards, rollout.group_size, eps, ddof)
    else:
        adv = group_centre(rollout.rewards, rollout.group_size)
    return broadcast_to_tokens(adv, rollout)


def degenerate_groups(rewards: Array, group_size: int) -> Array:
    """[B] bool: the row's group has all-equal rewards (every row's group-centred
    advantage is 0; DAPO's dynamic sampling drops these groups, GPG counts them
    as the M "invalid" samples)."""
    chex.assert_rank(rewards, 1)
    grouped = group_view(rewards, group_size)
    equal = jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)
    return jnp.repeat(equal, group_size)


# --------------------------------------------------------------------------
# Masked group statistics
# --------------------------------------------------------------------------

def group_masked_mean(x: Array, mask: Array, group_size: int) -> Array:
    """[B]: mean of x over the rows of each group where `mask` is set, repeated
    over the group (0 for a group with no such row)."""
    chex.assert_rank([x, mask], 1)
    chex.assert_equal_shape([x, mask])
    x, mask = group_view(x, group_size), group_view(mask.astype(jnp.float32), group_size)
    total = jnp.sum(jnp.where(mask != 0, x * mask, 0.0), axis=1, keepdims=True)
    mean = total / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1e-8)
    return jnp.broadcast_to(mean, x.shape).reshape(-1)


def _group_masked_logits(x: Array, mask: Array, group_size: int) -> tuple[Array, Array]:
    """([G, K] logits with −inf off the mask, [G, 1] their max, 0 for empty groups)."""
    chex.assert_rank([x, mask], 1)
    chex.assert_equal_shape([x, mask])
    on = group_view(mask, group_size).astype(bool)
    logits = jnp.where(on, group_view(x, group_size), -jnp.inf)
    top = jnp.max(logits, axis=1, keepdims=True)
    return logits, jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))


def group_masked_softmax(x: Array, mask: Array, group_size: int) -> Array:
    """[B]: softmax of x over the rows of each group where `mask` is set,
    exp(x_i) / Σ_{j in group, mask_j} exp(x_j); 0 off the mask and in groups
    with no masked row. Stable for any finite x."""
    logits, top = _group_masked_logits(x, mask, group_size)
    weights = jnp.exp(logits - top)
    weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1e-30)
    return weights.reshape(-1)


def group_masked_logmeanexp(x: Array, mask: Array, group_size: int) -> Array:
    """[G]: log (1/n) Σ_{j in group, mask_j} exp(x_j) over the n masked rows of
    each group (0 for a group with none). Its gradient is the masked softmax,
    and it is differentiable in x (no NaN from the −inf of unmasked rows)."""
    logits, top = _group_masked_logits(x, mask, group_size)
    on = jnp.isfinite(logits)
    total = jnp.sum(jnp.where(on, jnp.exp(jnp.where(on, logits - top, 0.0)), 0.0), axis=1)
    count = jnp.sum(on, axis=1)
    value = jnp.log(jnp.maximum(total, 1e-30)) + top[:, 0] - jnp.log(jnp.maximum(count, 1))
    return jnp.where(count > 0, value, 0.0)


def group_value_entropy(keys: Array, group_size: int) -> Array:
    """[B]: entropy in bits of the empirical distribution of `keys` (e.g. the
    final answers) within each row's group, −Σ_v p_v log2 p_v with p_v the
    fraction of the group's rows whose key equals v. 0 when all keys agree,
    log2 K when all differ. Uses (1/K) Σ_i log2(K / n_i), with n_i the
    number of rows sharing row i's key."""
    chex.assert_rank(keys, 1)
    grouped = group_view(keys, group_size)
    counts = jnp.sum(grouped[:, :, None] == grouped[:, None, :], axis=2).astype(jnp.float32)
    entropy = jnp.mean(jnp.log2(group_size / counts), axis=1, keepdims=True)
    return jnp.broadcast_to(entropy, grouped.shape).reshape(-1)


# --------------------------------------------------------------------------
# Pairs of rows within a group
# --------------------------------------------------------------------------
# Pairs are taken inside each group of K rows: every unordered pair (i < j)
# of the same prompt, which for K = 2 is exactly the preference pair.

def group_pair_differences(x: Array, group_size: int) -> Array:
    """[G, K, K]: d[g, i, j] = x_i − x_j for rows i, j of group g."""
    chex.assert_rank(x, 1)
    grouped = group_view(x, group_size)
    return grouped[:, :, None] - grouped[:, None, :]


def group_pair_weight(rollout: Rollout) -> Array:
    """[G, K, K]: min(sample_weight_i, sample_weight_j) for i < j, 0 on and
    below the diagonal, so each unordered pair of kept rows counts once."""
    k = rollout.group_size
    if k < 2:
        raise ValueError(f"pairwise losses need at least two rows per group, got group_size={k}")
    weight = group_view(rollout.sample_weight.astype(jnp.float32), k)
    pair = jnp.minimum(weight[:, :, None], weight[:, None, :])
    return jnp.where(jnp.triu(jnp.ones((k, k), bool), k=1), pair, 0.0)


def group_win_rates(
    rewards: Array,
    sample_weight: Array,
    group_size: int,
    preference: Literal["bradley-terry", "hard"] = "bradley-terry",
) -> Array:
    """[B]: P̂(y_i ≻ π | x) = Σ_j w_j P(y_i ≻ y_j) / Σ_j w_j, the estimated
    probability that row i beats a response drawn from its group (the
    sampling policy), over the kept rows j of the group including i itself
    (P(y_i ≻ y_i) = ½). Pairwise preferences from scalar rewards:

        bradley-terry   P(y_i ≻ y_j) = σ(r_i − r_j)
        hard            P(y_i ≻ y_j) = 1[r_i > r_j] + ½·1[r_i = r_j]

    Since P(y_i ≻ y_j) + P(y_j ≻ y_i) = 1, Σ_i w_i (P̂_i − ½) = 0 in every
    group. A group with no kept row gets ½."""
    chex.assert_rank([rewards, sample_weight], 1)
    chex.assert_equal_shape([rewards, sample_weight])
    diff = group_pair_differences(rewards, group_size)
    if preference == "bradley-terry":
        prob = jax.nn.sigmoid(diff)
    elif preference == "hard":
        prob = jnp.where(diff > 0, 1.0, jnp.where(diff == 0, 0.5, 0.0))
    else:
        raise ValueError(f"unknown preference {preference!r}; choose bradley-terry or hard")
    weight = group_view(sample_weight.astype(jnp.float32), group_size)
    total = jnp.sum(weight, axis=1, keepdims=True)
    wins = jnp.sum(prob * weight[:, None, :], axis=2)
    rate = jnp.where(total > 0, wins / jnp.maximum(total, 1e-8), 0.5)
    return rate.reshape(rewards.shape)
