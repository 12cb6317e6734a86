"""Sentence segment ids for segment-level methods (`Rollout.segment_ids`):
a new segment starts after every token whose text ends a sentence."""

from __future__ import annotations

import numpy as np

SENTENCE_END = (".", "!", "?", "\n")


def sentence_end_ids(tokenizer, vocab_size: int) -> np.ndarray:
    """[V] bool: token ids whose text ends a sentence."""
    ends = np.zeros(vocab_size, bool)
    for i in range(vocab_size):
        try:
            text = tokenizer.decode([i])
        except Exception:  # ids outside the tokenizer (padding rows of the embedding)
            continue
        ends[i] = text.rstrip(" ").endswith(SENTENCE_END)
    return ends


def sentence_segment_ids(tokens: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[B, T] int32: segment index of each token (0 from the start)."""
    boundary = ends[np.clip(tokens, 0, len(ends) - 1)]
    return np.concatenate([np.zeros((len(tokens), 1), np.int32), np.cumsum(boundary, 1)[:, :-1].astype(np.int32)], 1)
