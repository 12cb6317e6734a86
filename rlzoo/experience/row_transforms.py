"""Rollout -> Rollout transforms that change which rows a batch holds or how
they count: preference pairs from groups of K on-policy samples, rejected
groups weighed out, and DAPO's dynamic-sampling filter of all-equal groups.

Each transform is pure and jit-able (shapes stay static) and clears the
normaliser, because the aggregation counts change: set it on the result.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp

from rlzoo.ops import PairMode, degenerate_groups, group_view
from rlzoo.rollout import Rollout


def make_pairs(rollout: Rollout, mode: PairMode = "best_vs_worst", margin: float = 0.0) -> Rollout:
    """Preference pairs from groups of K ≥ 2 on-policy samples: a Rollout with
    group_size = 2 whose rows are gathered from `rollout` (every row field
    follows its row), so any pairwise loss trains on-policy.

        best_vs_worst  one pair per group: the highest- and the lowest-reward
                       kept rows (sample_weight > 0); G pairs, 2G rows.
        all_pairs      every unordered pair i < j of the group, in
                       lexicographic order; G·K(K − 1)/2 pairs.

    Pairs whose reward gap |r_i − r_j| is below `margin` get sample_weight 0
    (shapes stay static, so this is jit-able); tied pairs are ignored by the
    pairwise losses anyway. A pair's rows keep their own sample weights, and
    a best-vs-worst pair of a group with fewer than two kept rows is dropped.
    The normaliser is cleared (the counts change): set it on the pair batch.
    """
    k = rollout.group_size
    if k < 2:
        raise ValueError(f"make_pairs needs groups of at least two rows, got group_size={k}")
    groups = rollout.num_groups
    rewards = group_view(rollout.rewards, k)
    kept = group_view(rollout.sample_weight, k) > 0
    base = jnp.arange(groups, dtype=jnp.int32)[:, None] * k
    if mode == "best_vs_worst":
        best = jnp.argmax(jnp.where(kept, rewards, -jnp.inf), axis=1)
        worst = jnp.argmin(jnp.where(kept, rewards, jnp.inf), axis=1)
        local = jnp.stack([best, worst], axis=1).astype(jnp.int32)
        valid = jnp.sum(kept, axis=1) >= 2
    elif mode == "all_pairs":
        first, second = zip(*itertools.combinations(range(k), 2))
        local = jnp.broadcast_to(jnp.stack([jnp.asarray(first), jnp.asarray(second)], axis=1), (groups, len(first), 2))
        local = local.astype(jnp.int32)
        valid = jnp.ones((groups, len(first)), bool)
    else:
        raise ValueError(f"unknown pair mode {mode!r}; choose best_vs_worst or all_pairs")
    index = (base[:, :, None] if local.ndim == 3 else base) + local
    index = index.reshape(-1, 2)
    gap = jnp.abs(rollout.rewards[index[:, 0]] - rollout.rewards[index[:, 1]])
    keep = valid.reshape(-1) & (gap >= margin)
    pairs = rollout.select_rows(index.reshape(-1))
    weight = jnp.where(jnp.repeat(keep, 2), pairs.sample_weight, 0.0).astype(pairs.sample_weight.dtype)
    return pairs.replace(sample_weight=weight, group_size=2, normaliser=None)


def weigh_out_rejected(rollout: Rollout, keep_groups) -> Rollout:
    """sample_weight 0 on the rows of the groups `keep_groups` [G] rejects
    (shapes stay static). For a trainer to call before `advantages` and
    before freezing the normaliser, so the rejected rows leave the
    aggregation counts as well; any normaliser already set is cleared
    because it would count them."""
    keep_rows = jnp.repeat(jnp.asarray(keep_groups, bool), rollout.group_size)
    weight = jnp.where(keep_rows, rollout.sample_weight, 0.0).astype(rollout.sample_weight.dtype)
    return rollout.replace(sample_weight=weight, normaliser=None)


def drop_degenerate_groups(rollout: Rollout) -> Rollout:
    """The rollout with sample_weight = 0 on groups whose rewards are all equal
    (DAPO's dynamic-sampling filter, Yu et al. 2025, arXiv:2503.14476, eq. 11;
    the paper's batch holds only kept groups)."""
    degenerate = group_view(degenerate_groups(rollout.rewards, rollout.group_size), rollout.group_size)[:, 0]
    return weigh_out_rejected(rollout, ~degenerate)
