"""Stage 1b, dynamic sampling: draw more prompts until the batch is full of
groups worth training on (an algorithm's declared `group_filter`, e.g.
DAPO's "rewards differ" rule, Yu et al. 2025, arXiv:2503.14476), then weigh
the groups that remain rejected 0."""

from __future__ import annotations

from typing import Callable, Iterator

import jax.numpy as jnp
import numpy as np

from rlzoo.rollout import Rollout, concat_rows

GroupFilter = Callable[[Rollout], "np.ndarray | None"]
"""scored rollout -> [G] bool (keep) or None (no filtering)."""


def collect(batches: Iterator[Rollout], keep: GroupFilter, groups: int, max_rounds: int) -> tuple[Rollout, int]:
    """(rollout of `groups` groups, rounds drawn).

    Takes the first scored batch; while the filter keeps fewer than `groups`
    groups and fewer than `max_rounds` batches were drawn, draws another.
    The result holds the kept groups first (in drawing order), then the
    earliest rejected ones to fill the batch."""
    first = next(batches)
    mask = keep(first)
    if mask is None:
        return first, 1
    drawn, masks = [first], [np.asarray(mask, bool)]
    while len(drawn) < max_rounds and sum(int(m.sum()) for m in masks) < groups:
        drawn.append(next(batches))
        masks.append(np.asarray(keep(drawn[-1]), bool))
    joined = concat_rows(drawn) if len(drawn) > 1 else first
    order = np.argsort(~np.concatenate(masks), kind="stable")[:groups]
    k = first.group_size
    return joined.select_rows((order[:, None] * k + np.arange(k)).reshape(-1)), len(drawn)


def weigh_out_rejected(rollout: Rollout, keep_groups) -> Rollout:
    """sample_weight 0 on the rows of groups the filter rejects (shapes stay
    static; the normaliser is cleared because the counts change)."""
    keep_rows = jnp.repeat(jnp.asarray(keep_groups, bool), rollout.group_size)
    weight = jnp.where(keep_rows, rollout.sample_weight, 0.0).astype(rollout.sample_weight.dtype)
    return rollout.replace(sample_weight=weight, normaliser=None)
