"""The shared batch format: `Rollout` (what was sampled) and `PolicyStats`
(what the current policy says about it).

Alignment rule: every per-token array is aligned with `tokens`. Entry
`[b, t]` is about token `tokens[b, t]`, predicted from `tokens[b, :t]`, so
position 0 is never trained on (`loss_mask[:, 0] == False`).

Grouping rule: rows are grouped contiguously, `group_size` (K) rows per
prompt, so group statistics are a reshape `[B] -> [B // K, K]`. Preference
pairs are groups of K = 2 (chosen = higher reward).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class Normaliser:
    """Whole-minibatch counts that aggregation divides by.

    When a minibatch is split into microbatches for gradient accumulation,
    every microbatch carries the counts of the whole minibatch, so the sum
    of the microbatch losses equals the minibatch loss exactly.
    """

    tokens: Array
    """Σ_b Σ_t loss_mask[b, t] · sample_weight[b] over the minibatch (scalar f32)."""
    rows: Array
    """Σ_b sample_weight[b] over the minibatch (scalar f32)."""


# Fields indexed by row (leading axis B). Everything else is static or a
# whole-minibatch scalar.
_ROW_FIELDS = (
    "tokens", "loss_mask", "behaviour_logprobs", "rewards", "sample_weight",
    "ref_logprobs", "reward_components", "prompt_ids", "is_expert",
    "policy_version", "token_rewards", "old_values", "segment_ids",
    "sample_entropy", "inference_logprobs", "truncated", "answer_ids",
    "old_topk_logprobs", "turn_ids", "turn_rewards", "state_keys", "num_turns",
)


@struct.dataclass
class Rollout:
    """B rows of prompt + response tokens with everything the losses read.

    Required fields come first; optional fields default to None and an
    algorithm lists the ones it reads in its `needs`.
    """

    tokens: Array
    """[B, T] int32: prompt + response (+ tool tokens), right-padded."""
    loss_mask: Array
    """[B, T] bool: True only on tokens the policy generated and is trained on."""
    behaviour_logprobs: Array
    """[B, T] f32: log-prob of each token under the policy that generated it (0 off-mask)."""
    rewards: Array
    """[B] f32: outcome reward of the row."""
    sample_weight: Array
    """[B] f32: 1 = use the row, 0 = dropped (filtering keeps shapes static)."""
    group_size: int = struct.field(pytree_node=False, default=1)
    """K: rows g*K .. g*K+K-1 share one prompt."""

    ref_logprobs: Array | None = None
    """[B, T] f32: reference-policy log-probs (KL terms, preference losses)."""
    reward_components: Array | None = None
    """[B, C] f32: several reward signals, for multi-reward methods."""
    prompt_ids: Array | None = None
    """[B] int32: persistent prompt identity across steps (stateful methods)."""
    is_expert: Array | None = None
    """[B] bool: off-policy expert / teacher / replayed row."""
    policy_version: Array | None = None
    """[B] int32: trainer step that produced the row (staleness)."""
    token_rewards: Array | None = None
    """[B, T] f32: per-token rewards (e.g. process rewards); when None the
    outcome reward sits on the last trained token."""
    old_values: Array | None = None
    """[B, T] f32: critic value V(tokens[b, :t]) at sampling time (PPO's old
    values; the current critic's values are `PolicyStats.values`)."""
    segment_ids: Array | None = None
    """[B, T] int32: segment (sentence / step) index of each token, for segment-level ratios."""
    sample_entropy: Array | None = None
    """[B, T] f32: entropy of the sampling distribution at each position."""
    inference_logprobs: Array | None = None
    """[B, T] f32: sampler-side log-probs when they differ from the trainer's
    `behaviour_logprobs` (train/inference mismatch correction)."""
    truncated: Array | None = None
    """[B] bool: the response hit the generation limit without an end token."""
    answer_ids: Array | None = None
    """[B] int32: identity of the row's extracted final answer (equal ids = the
    same answer, −1 = none could be extracted), for answer-consistency methods."""
    old_topk_logprobs: Array | None = None
    """[B, T, k] f32: the k largest log-probs of the behaviour policy's
    next-token distribution at each position (like `behaviour_logprobs`, at
    sampling time), for methods that summarise the old distribution."""
    turn_ids: Array | None = None
    """[B, T] int32: 0 = not a policy token (prompt, observation, tool result,
    padding); k = a token of the row's k-th policy turn (multi-turn episodes).
    Wherever `loss_mask` is True, turn_ids > 0."""
    turn_rewards: Array | None = None
    """[B, N] f32: the reward the environment gave after each policy turn
    (N = the most turns any row may take; 0 past `num_turns`)."""
    state_keys: Array | None = None
    """[B, N] int32: a hash of the environment's state before each policy turn
    (equal keys = the same state, for anchor-state groups; −1 past
    `num_turns` or where the environment gives no key)."""
    num_turns: Array | None = None
    """[B] int32: policy turns the row's episode took (1 for single-turn rows)."""
    normaliser: Normaliser | None = None
    """Whole-minibatch counts for exact microbatch accumulation (see `with_normaliser`)."""

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def num_groups(self) -> int:
        return self.batch_size // self.group_size

    def with_normaliser(self) -> "Rollout":
        """Freeze this batch's token and row counts as the aggregation normaliser."""
        weight = self.sample_weight.astype(jnp.float32)
        tokens = jnp.sum(self.loss_mask * weight[:, None])
        return self.replace(normaliser=Normaliser(tokens=tokens, rows=jnp.sum(weight)))

    def select_rows(self, index: Any) -> "Rollout":
        """The rows `index` (a slice or index array); keeps the normaliser as is."""
        updates = {
            name: getattr(self, name)[index]
            for name in _ROW_FIELDS
            if getattr(self, name) is not None
        }
        return self.replace(**updates)

    def microbatches(self, n: int) -> list["Rollout"]:
        """Split into `n` equal microbatches at group boundaries, each carrying
        this batch's normaliser, so their summed losses equal the batch loss."""
        if self.num_groups % n:
            raise ValueError(
                f"cannot split {self.num_groups} groups of {self.group_size} rows "
                f"into {n} equal microbatches at group boundaries"
            )
        whole = self if self.normaliser is not None else self.with_normaliser()
        rows = self.batch_size // n
        return [whole.select_rows(slice(i * rows, (i + 1) * rows)) for i in range(n)]


@struct.dataclass
class PolicyStats:
    """What the current policy says about the rollout's tokens; computed
    inside the differentiated function, never stored in the Rollout."""

    logprobs: Array
    """[B, T] f32: log π_θ(tokens[b, t] | tokens[b, :t])."""
    entropy: Array | None = None
    """[B, T] f32: entropy of π_θ(· | tokens[b, :t])."""
    values: Array | None = None
    """[B, T] f32: value head V_θ(tokens[b, :t])."""
    topk_logprobs: Array | None = None
    """[B, T, k] f32: the k largest log-probs of π_θ(· | tokens[b, :t])."""


def concat_rows(parts: Sequence[Rollout]) -> Rollout:
    """The rows of `parts` in order, as one Rollout: per-token fields are
    right-padded with zeros (False, token 0) to the longest T, which adds
    untrained positions after every sequence and so changes no loss. The
    parts need the same group size and the same optional fields; a
    normaliser is dropped (it would count only one part)."""
    if not parts:
        raise ValueError("concat_rows needs at least one Rollout")
    first = parts[0]
    length = max(p.seq_len for p in parts)
    if any(p.group_size != first.group_size for p in parts):
        raise ValueError(f"cannot concatenate rollouts of group sizes {[p.group_size for p in parts]}")
    joined = {}
    for name in _ROW_FIELDS:
        values = [getattr(p, name) for p in parts]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"Rollout.{name} is set in some parts and None in others")
        if _FIELD_SPECS[name][0].startswith("[B, T"):
            values = [jnp.pad(v, [(0, 0), (0, length - v.shape[1])] + [(0, 0)] * (v.ndim - 2)) for v in values]
        joined[name] = jnp.concatenate(values, axis=0)
    return first.replace(normaliser=None, **joined)


def make_rollout(
    tokens: Any,
    loss_mask: Any,
    rewards: Any,
    behaviour_logprobs: Any = None,
    *,
    group_size: int = 1,
    sample_weight: Any = None,
    **optional: Any,
) -> Rollout:
    """Build and validate a Rollout from array-likes, filling defaults
    (zero behaviour log-probs, unit sample weights) and casting dtypes."""
    tokens = jnp.asarray(tokens, jnp.int32)
    loss_mask = jnp.asarray(loss_mask, bool)
    rewards = jnp.asarray(rewards, jnp.float32)
    if behaviour_logprobs is None:
        behaviour_logprobs = jnp.zeros(tokens.shape, jnp.float32)
    if sample_weight is None:
        sample_weight = jnp.ones(rewards.shape[:1], jnp.float32)
    unknown = set(optional) - {f.name for f in dataclasses.fields(Rollout)}
    if unknown:
        raise ValueError(f"unknown Rollout field(s): {sorted(unknown)}")
    casts = {
        name: jnp.asarray(value, _FIELD_SPECS[name][1])
        for name, value in optional.items()
        if value is not None and name in _FIELD_SPECS
    }
    rollout = Rollout(
        tokens=tokens,
        loss_mask=loss_mask,
        behaviour_logprobs=jnp.asarray(behaviour_logprobs, jnp.float32),
        rewards=rewards,
        sample_weight=jnp.asarray(sample_weight, jnp.float32),
        group_size=group_size,
        **casts,
    )
    validate(rollout)
    return rollout


# name -> (shape in symbols, dtype kind to cast to, numpy kinds accepted)
_FIELD_SPECS = {
    "tokens": ("[B, T]", jnp.int32, "iu"),
    "loss_mask": ("[B, T]", bool, "b"),
    "behaviour_logprobs": ("[B, T]", jnp.float32, "f"),
    "rewards": ("[B]", jnp.float32, "f"),
    "sample_weight": ("[B]", jnp.float32, "f"),
    "ref_logprobs": ("[B, T]", jnp.float32, "f"),
    "reward_components": ("[B, C]", jnp.float32, "f"),
    "prompt_ids": ("[B]", jnp.int32, "iu"),
    "is_expert": ("[B]", bool, "b"),
    "policy_version": ("[B]", jnp.int32, "iu"),
    "token_rewards": ("[B, T]", jnp.float32, "f"),
    "old_values": ("[B, T]", jnp.float32, "f"),
    "segment_ids": ("[B, T]", jnp.int32, "iu"),
    "sample_entropy": ("[B, T]", jnp.float32, "f"),
    "inference_logprobs": ("[B, T]", jnp.float32, "f"),
    "truncated": ("[B]", bool, "b"),
    "answer_ids": ("[B]", jnp.int32, "iu"),
    "old_topk_logprobs": ("[B, T, k]", jnp.float32, "f"),
    "turn_ids": ("[B, T]", jnp.int32, "iu"),
    "turn_rewards": ("[B, N]", jnp.float32, "f"),
    "state_keys": ("[B, N]", jnp.int32, "iu"),
    "num_turns": ("[B]", jnp.int32, "iu"),
}
ROLLOUT_FIELDS = frozenset(_FIELD_SPECS)
POLICY_OUTPUTS = frozenset({"entropy", "values", "topk_logprobs"})


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate(rollout: Rollout, needs: Iterable[str] = ()) -> Rollout:
    """Check shapes, dtypes, grouping and values; raise a ValueError that names
    the field and the expected shape. Value checks (finite rewards, finite
    per-token floats on trained tokens, empty position 0) run only on
    concrete arrays, so this is safe inside `jit`.

    `needs` lists optional fields the caller's algorithm reads.
    """
    if not isinstance(rollout, Rollout):
        raise TypeError(f"expected a Rollout, got {type(rollout).__name__}")
    tokens = rollout.tokens
    if getattr(tokens, "ndim", None) != 2:
        raise ValueError(
            f"Rollout.tokens must have shape [B, T], got shape {np.shape(tokens)}"
        )
    batch, length = tokens.shape
    dims = {"B": batch, "T": length}
    if not isinstance(rollout.group_size, int) or rollout.group_size < 1:
        raise ValueError(f"Rollout.group_size must be a positive int, got {rollout.group_size!r}")
    if batch % rollout.group_size:
        raise ValueError(
            f"batch size B={batch} is not divisible by group_size K={rollout.group_size}: "
            "rows are grouped contiguously, K rows per prompt"
        )
    for name, (shape_text, _, kinds) in _FIELD_SPECS.items():
        _check_field(f"Rollout.{name}", getattr(rollout, name), shape_text, kinds, dims)
    missing = sorted(n for n in needs if n in ROLLOUT_FIELDS and getattr(rollout, n) is None)
    if missing:
        raise ValueError(
            f"this algorithm needs Rollout field(s) {missing}, which are None"
        )
    if _is_concrete(rollout.loss_mask) and bool(np.any(np.asarray(rollout.loss_mask)[:, 0])):
        rows = np.flatnonzero(np.asarray(rollout.loss_mask)[:, 0])
        raise ValueError(
            f"Rollout.loss_mask[:, 0] must be False (position 0 has no context to "
            f"predict it from), but it is True in rows {rows[:8].tolist()}"
        )
    _check_turns(rollout)
    for name in ("rewards", "reward_components", "token_rewards", "sample_weight", "turn_rewards"):
        value = getattr(rollout, name)
        if value is not None and _is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
            bad = np.argwhere(~np.isfinite(np.asarray(value)))[:4].tolist()
            raise ValueError(f"Rollout.{name} has non-finite entries at {bad}")
    if _is_concrete(rollout.loss_mask):
        _check_trained_values(rollout)
    if _is_concrete(rollout.sample_weight) and np.any(np.asarray(rollout.sample_weight) < 0):
        raise ValueError("Rollout.sample_weight must be >= 0")
    return rollout


def _check_turns(rollout: Rollout) -> None:
    """Turn fields agree with the mask and with each other (the shape checks
    already make the per-turn arrays share one N): every trained token
    belongs to a policy turn, and no token's turn exceeds its row's
    num_turns or the N slots of the per-turn arrays."""
    slots = [value.shape[1] for value in (rollout.turn_rewards, rollout.state_keys) if value is not None]
    turn_ids = rollout.turn_ids
    if turn_ids is None or not (_is_concrete(turn_ids) and _is_concrete(rollout.loss_mask)):
        return
    ids, mask = np.asarray(turn_ids), np.asarray(rollout.loss_mask)
    if np.any(ids < 0):
        raise ValueError("Rollout.turn_ids must be >= 0 (0 = not a policy token)")
    untagged = mask & (ids == 0)
    if np.any(untagged):
        raise ValueError(
            f"Rollout.loss_mask is True on tokens with turn_ids 0 (not a policy token) in rows "
            f"{np.flatnonzero(untagged.any(1))[:8].tolist()}"
        )
    if rollout.num_turns is not None and _is_concrete(rollout.num_turns):
        over = ids.max(axis=1) > np.asarray(rollout.num_turns)
        if np.any(over):
            raise ValueError(f"Rollout.turn_ids exceed Rollout.num_turns in rows {np.flatnonzero(over)[:8].tolist()}")
    if slots and ids.max(initial=0) > slots[0]:
        raise ValueError(f"Rollout.turn_ids reach turn {ids.max()}, past the N = {slots[0]} slots of the "
                         "per-turn arrays")


def _check_trained_values(rollout: Rollout) -> None:
    """Per-token floats must be finite on trained tokens (a NaN or −∞ log-prob
    there is a sampler or scoring bug, and it would reach the loss); top-k
    lists may hold −∞ (a support smaller than k) but not NaN. Untrained
    positions may hold anything: the losses never read them."""
    trained = np.asarray(rollout.loss_mask)
    for name, (shape_text, _, kinds) in _FIELD_SPECS.items():
        value = getattr(rollout, name)
        if value is None or kinds != "f" or not shape_text.startswith("[B, T") or not _is_concrete(value):
            continue
        on_trained = np.asarray(value)[trained]
        bad = np.isnan(on_trained) if shape_text == "[B, T, k]" else ~np.isfinite(on_trained)
        if np.any(bad):
            where = np.argwhere(trained)[np.flatnonzero(bad.reshape(len(on_trained), -1).any(axis=1))]
            raise ValueError(
                f"Rollout.{name} has non-finite entries on trained tokens (loss_mask True) at "
                f"[b, t] = {where[:4].tolist()}: {on_trained[bad][:4].tolist()}"
            )


_STATS_SPECS = {
    "logprobs": "[B, T]",
    "entropy": "[B, T]",
    "values": "[B, T]",
    "topk_logprobs": "[B, T, k]",
}


def validate_stats(stats: PolicyStats, rollout: Rollout) -> PolicyStats:
    """Check that PolicyStats scores this rollout: logprobs, entropy and
    values [B, T] and topk_logprobs [B, T, k], all float; raise a ValueError
    naming the field and both shapes. Without it a [B, 1] value broadcasts
    against [B, T] rollout fields into a finite, wrong loss. Shapes are
    static, so this also runs (at trace time) under `jit`."""
    if not isinstance(stats, PolicyStats):
        raise TypeError(f"expected PolicyStats, got {type(stats).__name__}")
    batch, length = rollout.loss_mask.shape
    dims = {"B": batch, "T": length}
    for name, shape_text in _STATS_SPECS.items():
        _check_field(f"PolicyStats.{name}", getattr(stats, name), shape_text, "f", dims)
    return stats


def zero_untrained(stats: PolicyStats, rollout: Rollout) -> tuple[PolicyStats, Rollout]:
    """(stats, rollout) with every per-token float of both set to 0 where
    loss_mask is False.

    Losses never read untrained positions, but padding may hold anything
    (NaN, ±∞). A `where` on a loss's output keeps such values out of the
    forward pass only: the backward pass multiplies the zero cotangent by the
    local derivative, and ∂exp(NaN) · 0 = NaN. Cleaning the inputs with
    `jnp.where` (a product with the mask would keep NaN · 0 = NaN) keeps
    them out of the gradient too, and the gradient there is exactly 0."""
    trained = rollout.loss_mask

    def clean(x):
        if x is None:
            return None
        on = trained.reshape(trained.shape + (1,) * (x.ndim - 2))
        return jnp.where(on, x, 0.0)

    rollout = rollout.replace(**{
        name: clean(getattr(rollout, name))
        for name, (shape_text, _, kinds) in _FIELD_SPECS.items()
        if kinds == "f" and shape_text.startswith("[B, T")
    })
    return stats.replace(**{name: clean(getattr(stats, name)) for name in _STATS_SPECS}), rollout


def _check_field(label: str, value: Any, shape_text: str, kinds: str, dims: dict[str, int]) -> None:
    """Raise unless `value` (None passes) has shape `shape_text` under `dims`
    (symbols not yet in `dims` are bound by this value) and a dtype of `kinds`."""
    if value is None:
        return
    symbols = shape_text.strip("[]").split(", ")
    shape = tuple(np.shape(value))
    if len(shape) != len(symbols):
        raise ValueError(
            f"{label} must have shape {shape_text} = "
            f"{_expected(symbols, dims)}, got rank {len(shape)} shape {shape}"
        )
    for axis, (symbol, size) in enumerate(zip(symbols, shape)):
        if symbol in dims and dims[symbol] != size:
            raise ValueError(
                f"{label} must have shape {shape_text} = "
                f"{_expected(symbols, dims)}, got {shape} (axis {axis}: "
                f"{symbol} should be {dims[symbol]})"
            )
        dims.setdefault(symbol, size)
    if np.dtype(value.dtype).kind not in kinds:
        raise ValueError(
            f"{label} must have a {'/'.join(_KIND_NAMES[k] for k in kinds)} "
            f"dtype, got {value.dtype}"
        )


_KIND_NAMES = {"i": "int", "u": "uint", "f": "float", "b": "bool"}


def _expected(symbols: list[str], dims: dict[str, int]) -> str:
    return "[" + ", ".join(str(dims.get(s, s)) for s in symbols) + "]"
