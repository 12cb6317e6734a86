"""Verifiable tasks: prompts, reference answers and rule-based rewards.

A task hands out training prompts (sampled from a caller-owned numpy RNG, so a
run is reproducible from its seed), a fixed held-out evaluation set disjoint
from the training prompts, and a reward function over the sampler's
completions (decoded text up to, not including, EOS).

    task = get_task("arithmetic", digits=2, ops=("+", "*"))
    batch = task.train_examples(np.random.default_rng(0), 64)
    r = task.reward(completion, batch[0])   # {"reward": total, "correct": .., "format": ..}

`r["reward"]` is the scalar reward of the row (Rollout.rewards);
`[r[k] for k in task.reward_names]` are its components in a fixed order
(Rollout.reward_components, for multi-reward methods).

Built-in tasks (`list_tasks()`):
- `arithmetic`: n-digit addition / multiplication, "37+45=" -> "82"
  (rlzoo/tasks/arithmetic.py); no files needed.
- `gsm8k`: grade-school math word problems read through tensorflow-datasets'
  ArrayRecord data source (rlzoo/tasks/gsm8k.py); needs a prepared TFDS data
  directory.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Protocol, runtime_checkable

import numpy as np

from rlzoo.named import construct, did_you_mean

__all__ = ["Example", "Task", "UnknownTaskError", "get_task", "list_tasks", "weighted_total"]


@dataclasses.dataclass(frozen=True)
class Example:
    """One problem."""

    prompt: str
    """The text shown to the model (before any chat template)."""
    answer: str
    """Reference final answer the reward checks."""
    solution: str
    """Reference completion for a supervised warm start (what the model should
    write, without EOS)."""


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a task."""

    name: str
    reward_names: tuple[str, ...]
    """Order of the reward components, e.g. ("correct", "format")."""

    def train_examples(self, rng: np.random.Generator, n: int) -> list[Example]:
        """`n` training problems drawn with `rng` (same RNG state -> same problems)."""
        ...

    def eval_examples(self) -> list[Example]:
        """A fixed held-out set, disjoint from every training problem."""
        ...

    def reward(self, completion: str, example: Example) -> dict[str, float]:
        """{"reward": total, **components} for one completion (EOS removed)."""
        ...

    def answer(self, completion: str) -> str | None:
        """The completion's final answer in canonical form (None: none found),
        so completions can be compared by answer (COPO's answer entropy)."""
        ...


class UnknownTaskError(ValueError):
    """Raised by `get_task` for a name that is not a registered task."""


# name -> "module:attribute"; modules are imported on first use, so asking for
# `arithmetic` never imports tensorflow-datasets.
_TASKS: dict[str, str] = {
    "arithmetic": "rlzoo.tasks.arithmetic:ArithmeticTask",
    "gsm8k": "rlzoo.tasks.gsm8k:GSM8KTask",
}


def list_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str, **kwargs) -> Task:
    """The task called `name`, constructed with `kwargs`.

    An unknown name raises `UnknownTaskError` (a ValueError) listing the
    available tasks and the close matches; constructor errors (a bad
    parameter, a data directory without the prepared data set) propagate.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _TASKS:
        raise UnknownTaskError(f"unknown task {name!r}.{did_you_mean(key, _TASKS)} "
                               f"Available tasks: {', '.join(list_tasks())}.")
    module, attr = _TASKS[key].split(":")
    return construct(getattr(importlib.import_module(module), attr), f"task {key}", kwargs)


def weighted_total(components: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """{"reward": Σ weights[k]·components[k], **components} (the shape `Task.reward` returns)."""
    total = sum(float(weights[k]) * float(v) for k, v in components.items())
    return {"reward": float(total), **{k: float(v) for k, v in components.items()}}
