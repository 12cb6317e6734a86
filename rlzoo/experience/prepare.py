"""Ready-made `Algorithm.prepare` hooks: (rollout, cfg, state) -> rollout,
for algorithm files to declare (`prepare=prepare.pair_groups`)."""

from __future__ import annotations

from typing import Any

from rlzoo.experience.row_transforms import make_pairs
from rlzoo.rollout import Rollout


def pair_groups(rollout: Rollout, cfg: Any, state: Any) -> Rollout:
    """Preference pairs from groups of K sampled rows, by `cfg.pair_mode`
    (the `rlzoo.pieces.Pairing` piece); groups of two are pairs already."""
    if rollout.group_size <= 2:
        return rollout
    return make_pairs(rollout, cfg.pair_mode)
