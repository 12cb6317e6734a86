"""Guess the number: find a secret integer in [1, n] from "higher" /
"lower" feedback.

Each policy turn is a number (the first integer in its text); the
observation is "higher" or "lower" (or "invalid guess: ..." without a
number), reward 1 and the end of the episode when it is right. The state
is the interval the feedback has narrowed the secret to, so every episode
starts in the same state and binary-search prefixes are shared across
episodes: GiGPO's anchor-state groups are non-trivial here. The scripted
optimal policy guesses the midpoint; it needs at most ⌈log2(n + 1)⌉ turns.
"""

from __future__ import annotations

import math
import re

import numpy as np

from rlzoo.envs import Step


class GuessNumberEnv:
    name = "guess_number"

    def __init__(self, n: int = 16, max_turns: int | None = None):
        if n < 2:
            raise ValueError(f"need n >= 2, got {n}")
        self.n = n
        self.max_turns = max_turns if max_turns is not None else math.ceil(math.log2(n + 1)) + 1
        if self.max_turns < 1:
            raise ValueError(f"need max_turns >= 1, got {self.max_turns}")

    def reset(self, seed: int) -> tuple[str, dict]:
        self.secret = int(np.random.default_rng([seed, 23]).integers(1, self.n + 1))
        self.low, self.high = 1, self.n
        prompt = f"I picked a number from 1 to {self.n}. Guess it; I answer higher or lower. Guess:"
        return prompt, {"state_key": (self.low, self.high)}

    def step(self, action: str) -> Step:
        match = re.search(r"-?\d+", action)
        if match is None:
            return Step("invalid guess: write a number. Guess:", 0.0, False, {"state_key": (self.low, self.high)})
        guess = int(match.group())
        if guess == self.secret:
            return Step("", 1.0, True, {"reward_parts": {"correct": 1.0}})
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
            feedback = "higher"
        else:
            self.high = min(self.high, guess - 1)
            feedback = "lower"
        return Step(f"{feedback}. Guess:", 0.0, False, {"state_key": (self.low, self.high)})

    def optimal_action(self) -> str:
        """The scripted optimal policy's next turn: the midpoint of what is left."""
        return str((self.low + self.high) // 2)
