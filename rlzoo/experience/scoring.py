"""Stage 3, scoring: the task's reward function on each completion ->
`rewards`, `reward_components`, `prompt_ids` and `answer_ids`."""

from __future__ import annotations

import jax.numpy as jnp

from rlzoo.experience.prompts import stable_id
from rlzoo.rollout import Rollout
from rlzoo.tasks import Example, Task


def score(task: Task, rollout: Rollout, completions: list[str], examples: list[Example]) -> Rollout:
    """The rollout with its rewards; row i answers examples[i // K]."""
    k = rollout.group_size
    if len(completions) != len(examples) * k:
        raise ValueError(f"{len(completions)} completions for {len(examples)} prompts x {k} samples")
    scores = [task.reward(c, examples[i // k]) for i, c in enumerate(completions)]
    names = task.reward_names
    answers = [task.answer(c) for c in completions]
    return rollout.replace(
        rewards=jnp.asarray([s["reward"] for s in scores], jnp.float32),
        reward_components=jnp.asarray([[s[n] for n in names] for s in scores], jnp.float32),
        prompt_ids=jnp.asarray([stable_id(examples[i // k].prompt) for i in range(len(scores))], jnp.int32),
        answer_ids=jnp.asarray([-1 if a is None else stable_id(a) for a in answers], jnp.int32),
    )
