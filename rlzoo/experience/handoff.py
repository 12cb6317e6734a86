"""Stage 6, the hand-off: a step's batch and its targets cut into shuffled
minibatches at group boundaries, each with its whole-minibatch normaliser,
sharded once over the mesh for the update."""

from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np

from rlzoo.rollout import Rollout
from rlzoo.sharding import shard_batch


def minibatches(rollout: Rollout, targets: Any, *, epochs: int, count: int, key: jax.Array,
                mesh) -> Iterator[tuple[Rollout, Any]]:
    """(minibatch, its targets) for every epoch and minibatch, sharded.

    Each epoch permutes the groups with `fold_in(key, epoch)`; a minibatch
    is a contiguous run of whole groups, so group statistics stay intact."""
    if rollout.num_groups % count:
        raise ValueError(f"--minibatches {count} must divide the {rollout.num_groups} groups of a step")
    k = rollout.group_size
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), rollout.num_groups))
        rows = (order[:, None] * k + np.arange(k)).reshape(-1)
        per = len(rows) // count
        for m in range(count):
            index = rows[m * per:(m + 1) * per]
            yield (shard_batch(rollout.select_rows(index).with_normaliser(), mesh),
                   shard_batch(jax.tree.map(lambda x: x[index], targets), mesh))
