"""Stage 1b, dynamic sampling: draw more prompts until the batch is full of
groups worth training on (an algorithm's declared `group_filter`, e.g.
DAPO's "rewards differ" rule, Yu et al. 2025, arXiv:2503.14476). The groups
that remain rejected are weighed 0 later by `row_transforms.weigh_out_rejected`."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from rlzoo.rollout import Rollout, concat_rows

GroupFilter = Callable[[Rollout], Any]
"""scored rollout -> [G] bool array (keep) or None (no filtering)."""


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
    drawn, masks = [first], [np.asarray(mask, bool)]  # a jax or numpy [G] mask
    while len(drawn) < max_rounds and sum(int(m.sum()) for m in masks) < groups:
        drawn.append(next(batches))
        masks.append(np.asarray(keep(drawn[-1]), bool))
    joined = concat_rows(drawn) if len(drawn) > 1 else first
    order = np.argsort(~np.concatenate(masks), kind="stable")[:groups]
    k = first.group_size
    return joined.select_rows((order[:, None] * k + np.arange(k)).reshape(-1)), len(drawn)
