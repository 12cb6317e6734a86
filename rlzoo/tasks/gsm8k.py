"""`gsm8k`: grade-school math word problems (Cobbe et al., 2021, arXiv:2110.14168).

Data: read with tensorflow-datasets' ArrayRecord data source,
`tfds.data_source("gsm8k", split=..., data_dir=data_dir, download=False)`,
which works without TensorFlow (`tfds.load` would need it). `data_dir` must
hold the data set prepared in the TFDS layout with `file_format="array_record"`:

    <data_dir>/gsm8k/1.0.0/dataset_info.json
    <data_dir>/gsm8k/1.0.0/features.json
    <data_dir>/gsm8k/1.0.0/gsm8k-train.array_record-00000-of-0000N   (N shards)
    <data_dir>/gsm8k/1.0.0/gsm8k-test.array_record-00000-of-0000N

Features as in TFDS's gsm8k builder (tensorflow_datasets/text/gsm8k/gsm8k.py):
question, answer (reasoning + "#### n"), annotation, short_answer.
`prepare_gsm8k` writes that layout offline from the jsonl files of
github.com/openai/grade-school-math (grade_school_math/data/{train,test}.jsonl),
through TFDS's own gsm8k builder (no TensorFlow needed);
tests/fixtures/make_gsm8k_fixture.py uses it for the test fixture. (TFDS's
stock `download_and_prepare` additionally needs network and, in
tensorflow-datasets 4.9.10, the undeclared `importlib_resources` package.)

Example: prompt = question + "\\n" + instruction (end with "#### <number>");
solution = the data set's answer text; answer = the number after "####",
canonicalised (commas, "$" and spaces removed; "18.00" -> "18").

Answer extraction (`extract_answer`): the number after the LAST "####" in the
text (as verl's `gsm8k.extract_solution(method="strict")` takes the last
match), allowing spaces, "$" and a sign between "####" and the digits, commas
inside the digits and a decimal part: "#### 1,234" -> "1234", "#### $5" ->
"5", "#### -$3.50" -> "-3.5". Numbers compare as decimals, so "18", "18.0"
and "18.00" are equal.

Rewards: correct = 1 when the extracted number equals the reference answer;
format = 1 when the completion contains "#### <number>" at all;
reward = correct + format_weight · format.
"""

from __future__ import annotations

import decimal
import os
import pathlib
import re
import tempfile
from typing import Mapping

import numpy as np

from rlzoo.tasks import Example, weighted_total

DEFAULT_INSTRUCTION = 'Solve the problem step by step. End with the final answer on its own line as "#### <number>".'
DATASET = "gsm8k"
LAYOUT = f"""\
  <data_dir>/{DATASET}/1.0.0/dataset_info.json
  <data_dir>/{DATASET}/1.0.0/features.json
  <data_dir>/{DATASET}/1.0.0/{DATASET}-train.array_record-00000-of-0000N   (one or more shards)
  <data_dir>/{DATASET}/1.0.0/{DATASET}-test.array_record-00000-of-0000N"""
_HOW_TO_PREPARE = (
    "Prepare it with TFDS in ArrayRecord format, e.g. "
    f"tfds.builder({DATASET!r}, data_dir=DATA_DIR, file_format='array_record').download_and_prepare() "
    "(needs network, and with tensorflow-datasets 4.9.10 on Python >= 3.9 the `importlib_resources` "
    "package, which it imports without declaring it), or offline from the jsonl files of github.com/openai/grade-school-math with "
    "rlzoo.tasks.gsm8k.prepare_gsm8k(DATA_DIR, {'train': 'train.jsonl', 'test': 'test.jsonl'})."
)

# "####", then optional spaces / sign / "$" in either order, then the number:
# digits with optional thousands commas and decimal part, or ".5".
_ANSWER = re.compile(
    r"####[ \t]*(?P<s1>[-+]?)[ \t]*\$?[ \t]*(?P<s2>[-+]?)[ \t]*"
    r"(?P<num>[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)"
)


class GSM8KDataNotFoundError(FileNotFoundError):
    """`data_dir` does not hold the prepared gsm8k data set (in ArrayRecord format)."""


# ---- answers ----

def _to_decimal(text: str) -> decimal.Decimal | None:
    try:
        value = decimal.Decimal(text.replace(",", "").replace("$", "").replace(" ", ""))
    except (decimal.InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def canonical_number(value: decimal.Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros: 18.00 -> "18", 1.2E+3 -> "1200"."""
    if value == 0:
        return "0"
    text = format(value, "f")  # exact; Decimal.normalize() would round to 28 digits
    return text.rstrip("0").rstrip(".") if "." in text else text


def extract_answer(text: str) -> str | None:
    """The canonical number after the last "####" in `text` (None when there is none)."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    negative = "-" in (m["s1"], m["s2"])
    value = _to_decimal(m["num"])
    if value is None:  # e.g. "1,,2." cannot happen with the regex, kept for safety
        return None
    return canonical_number(-value if negative else value)


def answers_match(predicted: str | None, reference: str) -> bool:
    """Numeric equality of two answer strings (commas, "$", spaces ignored)."""
    if predicted is None:
        return False
    a, b = _to_decimal(predicted), _to_decimal(reference)
    return a is not None and b is not None and a == b


# ---- data ----

def _resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
    return pathlib.Path(data_dir).expanduser()


def _check_layout(data_dir: pathlib.Path, splits: tuple[str, ...]) -> None:
    """Raise GSM8KDataNotFoundError naming the expected layout unless `data_dir` holds the prepared splits."""
    versions = sorted(p.parent for p in (data_dir / DATASET).glob("*/dataset_info.json"))
    if not versions:
        raise GSM8KDataNotFoundError(
            f"gsm8k: no prepared TFDS data set under data_dir={str(data_dir)!r} "
            f"(looked for {data_dir / DATASET}/<version>/dataset_info.json). Expected layout:\n{LAYOUT}\n{_HOW_TO_PREPARE}"
        )
    for split in splits:
        if not any(list(v.glob(f"{DATASET}-{split}.array_record-*")) for v in versions):
            found = sorted(p.name for v in versions for p in v.iterdir())
            raise GSM8KDataNotFoundError(
                f"gsm8k: {', '.join(map(str, versions))} has no ArrayRecord shards for split {split!r} "
                f"(files there: {found}). tfds.data_source reads only file_format='array_record' "
                f"(TFRecord shards would need TensorFlow). Expected layout:\n{LAYOUT}\n{_HOW_TO_PREPARE}"
            )


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _reprepare(version_dir: str) -> str:
    # TFDS reuses a directory that is already there, so the damaged one has to go first.
    return f"delete {version_dir}, then: {_HOW_TO_PREPARE}"


def _read_records(source, split: str) -> list[dict[str, str]]:
    """The records of `source` shard by shard, so that a damaged shard is named. A truncated
    ArrayRecord shard loses its index: it then reads as records of None, or fails to read."""
    from array_record.python.array_record_module import ArrayRecordReader

    records: list[dict[str, str]] = []
    for shard in source.dataset_info.splits[split].file_instructions:
        fix = _reprepare(os.path.dirname(shard.filename))
        reader = ArrayRecordReader(shard.filename)
        found = reader.num_records() if reader.ok() else 0
        del reader  # not close(): that raises for a file it could not open
        if found != shard.examples_in_shard:
            raise ValueError(
                f"gsm8k: shard {shard.filename} is truncated or damaged: {found} of the "
                f"{shard.examples_in_shard} records dataset_info.json lists are readable; {fix}"
            )
        try:
            records += [{k: _text(v) for k, v in source[i].items()}
                        for i in range(len(records), len(records) + shard.take)]
        except RuntimeError as e:  # array_record's error for a chunk whose checksum does not match
            raise ValueError(f"gsm8k: shard {shard.filename} is corrupt ({e}); {fix}") from e
    return records


def load_split(data_dir: str | os.PathLike | None, split: str) -> list[dict[str, str]]:
    """All records of one split as dicts of str, through `tfds.data_source`."""
    path = _resolve_data_dir(data_dir)
    _check_layout(path, (split,))
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(DATASET, split=split, data_dir=os.fspath(path), download=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the layout it needs
        raise GSM8KDataNotFoundError(
            f"gsm8k: tfds.data_source could not read split {split!r} from {str(path)!r}: {e}\n"
            f"Expected layout:\n{LAYOUT}\n{_HOW_TO_PREPARE}"
        ) from e
    return _read_records(source, split)


def prepare_gsm8k(data_dir: str | os.PathLike, jsonl: Mapping[str, str | os.PathLike]) -> pathlib.Path:
    """Write gsm8k in the TFDS ArrayRecord layout from local jsonl files, without network or TensorFlow.

    `jsonl` maps a split name to a file of {"question": ..., "answer": "... #### n"} lines (the
    format of github.com/openai/grade-school-math). The records go through TFDS's own gsm8k
    builder (same features, file names and dataset_info.json as `tfds build gsm8k`), with only
    the download step replaced by the local files. Returns the version directory written.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered, utils
    from tensorflow_datasets.text.gsm8k import gsm8k as tfds_gsm8k

    files = {split: pathlib.Path(p) for split, p in jsonl.items()}
    for split, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(f"gsm8k jsonl for split {split!r} not found: {p}")

    with registered.skip_registration():  # "gsm8k" is already registered by TFDS

        class _LocalGsm8k(tfds_gsm8k.Gsm8k):
            name = DATASET

            # No checksums file to look up for local files. (Also sidesteps tfds 4.9.10's
            # `code_path`, which imports `importlib_resources`, a package tfds only
            # requires on Python < 3.9.)
            @utils.classproperty
            @classmethod
            def code_path(cls):
                return None

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(p) for split, p in files.items()}

    builder = _LocalGsm8k(data_dir=os.fspath(data_dir), file_format="array_record")
    with tempfile.TemporaryDirectory() as downloads:
        builder.download_and_prepare(
            download_dir=downloads,
            download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP),
        )
    return pathlib.Path(builder.data_dir)


# ---- task ----

class GSM8KTask:
    """GSM8K with an exact numeric final-answer reward."""

    name = "gsm8k"
    reward_names = ("correct", "format")

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        train_split: str = "train",
        eval_split: str = "test",
        eval_size: int | None = None,
        format_weight: float = 0.1,
        instruction: str = DEFAULT_INSTRUCTION,
    ):
        """`data_dir` defaults to $TFDS_DATA_DIR or ~/tensorflow_datasets (TFDS's default);
        `eval_size` keeps the first that many problems of `eval_split` (all when None)."""
        if eval_size is not None and eval_size < 0:
            raise ValueError(f"eval_size must be >= 0 or None; got {eval_size}")
        self.data_dir = _resolve_data_dir(data_dir)
        self.format_weight = float(format_weight)
        self.instruction = instruction
        _check_layout(self.data_dir, (train_split, eval_split))
        self._train = [self._example(r) for r in load_split(self.data_dir, train_split)]
        evals = load_split(self.data_dir, eval_split)
        self._eval = [self._example(r) for r in (evals if eval_size is None else evals[:eval_size])]
        if not self._train:
            raise ValueError(f"gsm8k: split {train_split!r} in {self.data_dir} is empty")

    def __repr__(self) -> str:
        return f"GSM8KTask(data_dir={str(self.data_dir)!r}, train={len(self._train)}, eval={len(self._eval)})"

    def prompt(self, question: str) -> str:
        return f"{question.strip()}\n{self.instruction}" if self.instruction else question.strip()

    def _example(self, record: Mapping[str, str]) -> Example:
        answer = extract_answer(record["answer"])
        if answer is None:
            raise ValueError(f"gsm8k record without a '#### <number>' answer: {record['answer']!r}")
        return Example(prompt=self.prompt(record["question"]), answer=answer, solution=record["answer"].strip())

    def train_examples(self, rng: np.random.Generator, n: int) -> list[Example]:
        """`n` training problems: distinct when n <= the split size, else drawn with replacement."""
        size = len(self._train)
        idx = rng.choice(size, size=n, replace=n > size)
        return [self._train[int(i)] for i in idx]

    def eval_examples(self) -> list[Example]:
        return list(self._eval)

    def reward(self, completion: str, example: Example) -> dict[str, float]:
        predicted = extract_answer(completion)
        correct = float(answers_match(predicted, example.answer))
        fmt = float(predicted is not None)
        return weighted_total({"correct": correct, "format": fmt}, {"correct": 1.0, "format": self.format_weight})

    def answer(self, completion: str) -> str | None:
        """The canonical number after the last "####" (`extract_answer`)."""
        return extract_answer(completion)
