"""`arithmetic`: addition and multiplication of n-digit numbers.

Prompt "37+45=", solution / answer "82": compact for a byte-level model (one
byte per character, no chat template needed).

Difficulty: `digits` (an operand has exactly that many digits; a pair
(lo, hi) draws each operand's digit count uniformly from lo..hi; one-digit
operands include 0) and `ops` (a subset of {"+", "*"}, drawn uniformly per
problem).

Train / eval split: a problem is held out when a stable hash (BLAKE2b) of its
canonical form `min(a,b) op max(a,b)` falls in the lowest `holdout_fraction`
of the hash range. Both operations are commutative, so "3+5" and "5+3" land on
the same side and the model never trains on the mirror image of an eval
problem. The split depends on neither the seed nor the RNG, only on the
problem; `eval_examples()` is a fixed sample (chosen by `seed`) of at most
`eval_size` held-out problems, and `train_examples` rejects held-out draws.

Rewards (completion = sampler output up to EOS, EOS removed):
- correct = 1 when `completion.strip() == answer`;
- format  = 1 when the completion is only ASCII digits, optionally followed
  by whitespace;
- reward  = correct + format_weight · format.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from rlzoo.tasks import Example, weighted_total

OPS = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}
_FORMAT = re.compile(r"[0-9]+\s*")
_ENUMERATE_LIMIT = 100_000
"""Problem spaces up to this size are enumerated to build the eval set;
larger ones are rejection-sampled."""
MAX_DIGITS = 18
"""Operands must fit in int64 for numpy's RNG."""


def operand_range(d: int) -> tuple[int, int]:
    """Inclusive range of the d-digit numbers (0..9 for d = 1)."""
    return (0 if d == 1 else 10 ** (d - 1)), 10**d - 1


def held_out(a: int, op: str, b: int, fraction: float) -> bool:
    """Whether the problem `a op b` belongs to the held-out (eval) partition.

    Order-independent: held_out(a, op, b) == held_out(b, op, a).
    """
    key = f"{min(a, b)}{op}{max(a, b)}".encode()
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return h < fraction * 2.0**64


class ArithmeticTask:
    """n-digit addition / multiplication with an exact-match reward."""

    name = "arithmetic"
    reward_names = ("correct", "format")

    def __init__(
        self,
        digits: int | tuple[int, int] = 2,
        ops: tuple[str, ...] | str = ("+",),
        eval_size: int = 200,
        seed: int = 0,
        format_weight: float = 0.1,
        holdout_fraction: float = 0.1,
    ):
        lo, hi = (digits, digits) if isinstance(digits, (int, np.integer)) else tuple(digits)
        if not 1 <= lo <= hi <= MAX_DIGITS:
            raise ValueError(f"digits must be an int or a (lo, hi) pair with 1 <= lo <= hi <= {MAX_DIGITS}; got {digits!r}")
        ops = tuple(ops)
        if not ops or any(o not in OPS for o in ops):
            raise ValueError(f"ops must be a non-empty subset of {sorted(OPS)}; got {ops!r}")
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1); got {holdout_fraction}")
        if eval_size < 0:
            raise ValueError(f"eval_size must be >= 0; got {eval_size}")
        self.digits = (int(lo), int(hi))
        self.ops = ops
        self.eval_size = int(eval_size)
        self.seed = int(seed)
        self.format_weight = float(format_weight)
        self.holdout_fraction = float(holdout_fraction)
        self._ranges = [operand_range(d) for d in range(lo, hi + 1)]
        self._eval = self._build_eval()

    def __repr__(self) -> str:
        return (f"ArithmeticTask(digits={self.digits}, ops={self.ops}, eval_size={self.eval_size}, "
                f"seed={self.seed}, format_weight={self.format_weight}, holdout_fraction={self.holdout_fraction})")

    # ---- problems ----

    def is_held_out(self, a: int, op: str, b: int) -> bool:
        return held_out(a, op, b, self.holdout_fraction)

    def example(self, a: int, op: str, b: int) -> Example:
        """The Example for `a op b`."""
        result = str(OPS[op](int(a), int(b)))
        return Example(prompt=f"{a}{op}{b}=", answer=result, solution=result)

    def _operand(self, rng: np.random.Generator) -> int:
        lo, hi = self._ranges[int(rng.integers(len(self._ranges)))]
        return int(rng.integers(lo, hi, endpoint=True))

    def _draw(self, rng: np.random.Generator) -> tuple[int, str, int]:
        op = self.ops[int(rng.integers(len(self.ops)))]
        return self._operand(rng), op, self._operand(rng)

    def _space_size(self) -> int:
        per_operand = sum(hi - lo + 1 for lo, hi in self._ranges)
        return len(self.ops) * per_operand**2

    def _build_eval(self) -> list[Example]:
        rng = np.random.default_rng([self.seed, 0x5EED])
        if self._space_size() <= _ENUMERATE_LIMIT:
            values = [v for lo, hi in self._ranges for v in range(lo, hi + 1)]
            pool = [(a, op, b) for op in self.ops for a in values for b in values if self.is_held_out(a, op, b)]
            if not pool or len(pool) == self._space_size():
                raise ValueError(f"{self!r}: the problem space is too small to split into train and eval problems")
            chosen = [pool[i] for i in rng.permutation(len(pool))[: self.eval_size]]
        else:
            seen: dict[tuple[int, str, int], None] = {}
            for _ in range(1000 * max(self.eval_size, 1)):
                if len(seen) >= self.eval_size:
                    break
                p = self._draw(rng)
                if self.is_held_out(*p):
                    seen[p] = None
            chosen = list(seen)
        return [self.example(*p) for p in chosen]

    def train_examples(self, rng: np.random.Generator, n: int) -> list[Example]:
        """`n` problems (with repeats) from the training partition."""
        out = []
        while len(out) < n:
            p = self._draw(rng)
            if not self.is_held_out(*p):
                out.append(self.example(*p))
        return out

    def eval_examples(self) -> list[Example]:
        """min(eval_size, number of held-out problems) fixed held-out problems."""
        return list(self._eval)

    # ---- reward ----

    def reward(self, completion: str, example: Example) -> dict[str, float]:
        correct = float(completion.strip() == example.answer)
        fmt = float(_FORMAT.fullmatch(completion) is not None)
        return weighted_total({"correct": correct, "format": fmt}, {"correct": 1.0, "format": self.format_weight})

    def answer(self, completion: str) -> str | None:
        """The stripped completion when it is a number, as the correctness rule compares it (None: not one)."""
        stripped = completion.strip()
        return stripped if _FORMAT.fullmatch(stripped) else None
