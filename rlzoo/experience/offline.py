"""Offline preference pairs as the step's rows, in place of generation and
scoring: `rlzoo train --algo dpo --preference-data pairs.jsonl`.

The file is read and encoded once (`rlzoo.preference_data`: rows
[chosen_0, rejected_0, ...], rewards 1 / 0, group_size 2); each step takes
`count` pairs drawn without replacement from a permutation per pass over
the data, fixed by (seed, pass), so a resumed run draws the same pairs. The
forwards stage then fills behaviour and reference log-probs as for sampled
rows."""

from __future__ import annotations

import pathlib

import numpy as np

from rlzoo.preference_data import preference_arrays, read_jsonl
from rlzoo.rollout import Rollout, make_rollout


def load_pairs(path: str | pathlib.Path, tokenizer, max_length: int) -> Rollout:
    """Every pair of a JSON-lines file as one Rollout (log-probs still zero)."""
    arrays = preference_arrays(read_jsonl(path), tokenizer, max_length)
    return make_rollout(
        arrays["tokens"], arrays["loss_mask"], arrays["rewards"], group_size=2,
        prompt_ids=arrays["prompt_ids"], reward_components=arrays.get("reward_components"),
    )


def step_pairs(pairs: Rollout, seed: int, step: int, count: int) -> Rollout:
    """The `count` pairs of step `step`: consecutive slices of a per-pass
    permutation, so every pair is seen once per pass."""
    total = pairs.num_groups
    if count > total:
        raise ValueError(f"--prompts-per-step {count} is more than the {total} pairs of the preference data")
    per_pass = total // count
    passes, index = divmod(step, per_pass)
    order = np.random.default_rng([seed, passes]).permutation(total)[index * count:(index + 1) * count]
    return pairs.select_rows(np.stack([2 * order, 2 * order + 1], axis=1).reshape(-1))
