"""Held-out evaluation: greedy completions of the task's evaluation prompts."""

from __future__ import annotations

import jax
import numpy as np

from rlzoo.experience.generation import SamplingSettings, generate
from rlzoo.sampling import Sampler
from rlzoo.tasks import Task


def evaluate(task: Task, sampler: Sampler, model, tokenizer, chat: bool, size: int,
             settings: SamplingSettings) -> dict[str, float]:
    """Greedy accuracy (the task's first reward component) and mean reward
    on the first `size` held-out prompts."""
    examples = task.eval_examples()[:size]
    _, completions = generate(sampler, model, tokenizer, chat, examples, 1, jax.random.key(0), settings, greedy=True)
    scores = [task.reward(c, ex) for c, ex in zip(completions, examples)]
    correct_key = task.reward_names[0]
    return {
        "eval_accuracy": float(np.mean([s[correct_key] for s in scores])),
        "eval_reward": float(np.mean([s["reward"] for s in scores])),
    }
