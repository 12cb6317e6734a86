"""Stage 1, the prompt source: which prompts a step trains on and how they
are encoded. Data order depends only on (seed, step, round), so a resumed
run draws exactly the prompts an uninterrupted one would."""

from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np

from rlzoo.tasks import Example, Task


def prompt_batches(task: Task, seed: int, step: int, count: int) -> Iterator[list[Example]]:
    """Batches of `count` training examples for step `step`: the first is the
    step's batch, the next ones are drawn only when a filter asks for more."""
    rng = np.random.default_rng([seed, step])
    while True:
        yield task.train_examples(rng, count)


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    """Prompt token ids: through the chat template for chat models, else BOS + text."""
    if chat:
        return tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}]))
    return tokenizer.encode(text, add_bos=True)


def stable_id(text: str) -> int:
    """A persistent id (the same text gets the same id in every run)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF
