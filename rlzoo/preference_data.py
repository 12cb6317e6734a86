"""Offline preference data: {"prompt", "chosen", "rejected"} records into
Rollouts of pairs.

A preference pair is a group of two rows (group_size = 2): row 2i is
prompt_i + chosen_i (reward 1), row 2i + 1 is prompt_i + rejected_i
(reward 0), so every pairwise algorithm (`Algorithm.pairwise`) trains on it
unchanged. Reference log-probs are computed once, when the pairs are built,
by a caller-supplied `ref_logprob_fn(tokens [B, T] int32) -> [B, T]` aligned
like the Rollout (entry [b, t] is log π_ref(tokens[b, t] | tokens[b, :t])).

    records = read_jsonl("tests/fixtures/preference_pairs.jsonl")
    rollout = preference_rollout(records, tokenizer, ref_logprob_fn, max_length=64)
    for batch in iterate_pairs(rollout, pairs_per_batch=8): ...

The tokenizer is any object with `encode(text) -> list[int]`, `eos_id` and
`pad_id` (e.g. `rlzoo.tokenizers.ByteTokenizer`); `bos_id`, when present,
starts every prompt. Records may carry "score_chosen" / "score_rejected"
(e.g. UltraFeedback ratings): they become `reward_components[:, 0]`, the
reward-model margin some losses read (MADPO's `margin_component=0`).
Sources: a JSON-lines file (`read_jsonl`) or a TensorFlow Datasets source
through `tfds.data_source` (`tfds_records`, no TensorFlow needed).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from rlzoo.rollout import Rollout, make_rollout


class Tokenizer(Protocol):
    """What the preference data path needs from a tokenizer."""

    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines skipped), each checked
    for string "prompt", "chosen" and "rejected" fields. A line that is not
    JSON, a record without those fields and a file without records are
    ValueErrors naming the file (and the line)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from None
            _check_record(record, f"{path}:{number}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no preference records (the file is empty or blank)")
    return records


def tfds_records(
    name: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    prompt_key: str = "prompt",
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    limit: int | None = None,
    data_source: Callable[..., Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records from a TensorFlow Datasets preference source, read with
    `tfds.data_source(name, split=..., data_dir=...)` (ArrayRecord files, no
    TensorFlow). Bytes fields are decoded as UTF-8 and renamed to
    prompt / chosen / rejected. The dataset must already be prepared in
    `data_dir` (this never downloads). `data_source` replaces
    `tfds.data_source` (for tests and custom readers)."""
    if data_source is None:
        import tensorflow_datasets as tfds

        data_source = tfds.data_source
    source = data_source(name, split=split, data_dir=data_dir)
    count = len(source) if limit is None else min(limit, len(source))
    for index in range(count):
        example = source[index]
        record = {
            "prompt": _text(example[prompt_key]),
            "chosen": _text(example[chosen_key]),
            "rejected": _text(example[rejected_key]),
        }
        _check_record(record, f"{name}[{split}][{index}]")
        yield record


def encode_pair(
    record: Mapping[str, Any],
    tokenizer: Tokenizer,
    max_length: int,
    max_prompt_length: int | None = None,
    add_eos: bool = True,
) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen ids, rejected ids) of one record, truncated so that
    prompt + response fits in `max_length`: the prompt keeps its last
    `max_prompt_length` tokens (default max_length // 2), then each response
    keeps its first max_length − len(prompt) tokens. Responses end with
    `eos_id` when `add_eos` (before truncation). The prompt is never empty
    (position 0 is never trained): an empty one becomes [bos_id] or [eos_id]."""
    if max_prompt_length is None:
        max_prompt_length = max_length // 2
    if not 1 <= max_prompt_length < max_length:
        raise ValueError(f"need 1 <= max_prompt_length < max_length, got {max_prompt_length}, {max_length}")
    prompt = list(tokenizer.encode(record["prompt"]))
    bos = getattr(tokenizer, "bos_id", None)
    if bos is not None and (not prompt or prompt[0] != bos):
        prompt = [bos] + prompt
    if not prompt:
        prompt = [tokenizer.eos_id]
    prompt = prompt[-max_prompt_length:]
    budget = max_length - len(prompt)
    responses = []
    for key in ("chosen", "rejected"):
        ids = list(tokenizer.encode(record[key]))
        if add_eos:
            ids.append(tokenizer.eos_id)
        responses.append(ids[:budget])
    return prompt, responses[0], responses[1]


def preference_arrays(
    records: Iterable[Mapping[str, Any]],
    tokenizer: Tokenizer,
    max_length: int,
    max_prompt_length: int | None = None,
    add_eos: bool = True,
    pad_to: int | None = None,
) -> dict[str, np.ndarray]:
    """Numpy arrays of the pairs, rows [chosen_0, rejected_0, chosen_1, …]:
    tokens [2N, T] (right-padded with `pad_id`), loss_mask [2N, T] (True on
    response tokens only), rewards [2N] (1 chosen, 0 rejected), prompt_ids [2N]
    (the pair's index) and, when every record has "score_chosen" and
    "score_rejected", reward_components [2N, 1]. T is the longest sequence,
    or `pad_to` (≤ max_length's truncation already applied)."""
    rows, masks, scores = [], [], []
    for record in records:
        prompt, chosen, rejected = encode_pair(record, tokenizer, max_length, max_prompt_length, add_eos)
        for response in (chosen, rejected):
            rows.append(prompt + response)
            masks.append([False] * len(prompt) + [True] * len(response))
        if "score_chosen" in record and "score_rejected" in record:
            scores += [float(record["score_chosen"]), float(record["score_rejected"])]
    if not rows:
        raise ValueError("no preference records")
    length = max(len(r) for r in rows) if pad_to is None else pad_to
    if any(len(r) > length for r in rows):
        raise ValueError(f"pad_to={pad_to} is shorter than the longest encoded pair ({max(len(r) for r in rows)})")
    tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
    loss_mask = np.zeros((len(rows), length), bool)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = row
        loss_mask[i, : len(mask)] = mask
    pairs = len(rows) // 2
    arrays = {
        "tokens": tokens,
        "loss_mask": loss_mask,
        "rewards": np.tile(np.array([1.0, 0.0], np.float32), pairs),
        "prompt_ids": np.repeat(np.arange(pairs, dtype=np.int32), 2),
    }
    if len(scores) == len(rows):
        arrays["reward_components"] = np.asarray(scores, np.float32)[:, None]
    return arrays


def preference_rollout(
    records: Iterable[Mapping[str, Any]],
    tokenizer: Tokenizer,
    ref_logprob_fn: Callable[[np.ndarray], Any],
    *,
    max_length: int,
    max_prompt_length: int | None = None,
    add_eos: bool = True,
    pad_to: int | None = None,
    batch_rows: int = 64,
    policy_logprob_fn: Callable[[np.ndarray], Any] | None = None,
) -> Rollout:
    """A Rollout of pairs (group_size = 2) with reference log-probs from
    `ref_logprob_fn`, called once per chunk of `batch_rows` rows.

    `behaviour_logprobs` are the current policy's log-probs from
    `policy_logprob_fn` when given, else a copy of the reference log-probs
    (the policy a DPO run starts from): offline pairs were not sampled by the
    policy, and only methods that read them (β-DPO's batch statistics,
    POWER-DL's label update) need them refreshed at each step."""
    arrays = preference_arrays(records, tokenizer, max_length, max_prompt_length, add_eos, pad_to)
    ref = _logprobs(ref_logprob_fn, arrays["tokens"], arrays["loss_mask"], batch_rows)
    behaviour = ref if policy_logprob_fn is None else _logprobs(
        policy_logprob_fn, arrays["tokens"], arrays["loss_mask"], batch_rows
    )
    return make_rollout(
        arrays["tokens"], arrays["loss_mask"], arrays["rewards"], behaviour,
        group_size=2,
        ref_logprobs=ref,
        prompt_ids=arrays["prompt_ids"],
        reward_components=arrays.get("reward_components"),
    )


def load_jsonl_pairs(
    path: str | pathlib.Path,
    tokenizer: Tokenizer,
    ref_logprob_fn: Callable[[np.ndarray], Any],
    **kwargs: Any,
) -> Rollout:
    """`preference_rollout` of the records of a JSON-lines file."""
    return preference_rollout(read_jsonl(path), tokenizer, ref_logprob_fn, **kwargs)


def iterate_pairs(
    rollout: Rollout,
    pairs_per_batch: int,
    *,
    shuffle_seed: int | None = None,
    drop_remainder: bool = True,
) -> Iterator[Rollout]:
    """Minibatches of whole pairs (both rows of a pair stay together), each
    with its own normaliser; pairs in a random order when `shuffle_seed` is
    given. With `drop_remainder` every batch has exactly `pairs_per_batch`
    pairs (static shapes for jit), so asking for more pairs than the data
    holds is an error (it would yield no batch at all); without it the last
    batch may be smaller. Arguments are checked when this is called, not at
    the first batch."""
    if rollout.group_size != 2:
        raise ValueError(f"iterate_pairs needs pairs (group_size=2), got group_size={rollout.group_size}")
    pairs = rollout.num_groups
    if pairs_per_batch < 1:
        raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
    if drop_remainder and pairs_per_batch > pairs:
        raise ValueError(
            f"pairs_per_batch={pairs_per_batch} is larger than the data ({pairs} pairs): with "
            "drop_remainder there would be no batch; lower it or pass drop_remainder=False"
        )
    order = np.arange(pairs)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(pairs)
    stop = pairs - pairs % pairs_per_batch if drop_remainder else pairs

    def batches() -> Iterator[Rollout]:
        for start in range(0, stop, pairs_per_batch):
            chosen = order[start:start + pairs_per_batch]
            rows = np.stack([2 * chosen, 2 * chosen + 1], axis=1).reshape(-1)
            yield rollout.select_rows(rows).replace(normaliser=None).with_normaliser()

    return batches()


def _logprobs(fn: Callable[[np.ndarray], Any], tokens: np.ndarray, mask: np.ndarray, batch_rows: int) -> np.ndarray:
    chunks = []
    for start in range(0, tokens.shape[0], batch_rows):
        block = tokens[start:start + batch_rows]
        values = np.asarray(fn(block), np.float32)
        if values.shape != block.shape:
            raise ValueError(f"ref_logprob_fn returned shape {values.shape} for tokens of shape {block.shape}")
        chunks.append(values)
    values = np.concatenate(chunks, axis=0)
    if not np.all(np.isfinite(values[mask])):
        raise ValueError("log-prob function returned non-finite values on response tokens")
    return np.where(mask, values, 0.0).astype(np.float32)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a preference record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(record.get(k), str)]
    if missing:
        raise ValueError(f"{where}: missing or non-string field(s) {missing}; need prompt, chosen, rejected")


__all__: Sequence[str] = (
    "Tokenizer", "read_jsonl", "tfds_records", "encode_pair", "preference_arrays",
    "preference_rollout", "load_jsonl_pairs", "iterate_pairs",
)
