"""Tests of rlzoo.tasks: arithmetic and gsm8k (from the TFDS ArrayRecord fixture)."""

from __future__ import annotations

import decimal
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlzoo.tasks import Example, Task, UnknownTaskError, get_task, list_tasks
from rlzoo.tasks import arithmetic as arith
from rlzoo.tasks import gsm8k

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GSM8K_DIR = FIXTURES / "gsm8k"
PROMPT = re.compile(r"([0-9]+)([+*])([0-9]+)=")


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_gsm8k_fixture", FIXTURES / "make_gsm8k_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solve(prompt: str) -> tuple[int, str, int, int]:
    """Independent re-derivation from the prompt text."""
    m = PROMPT.fullmatch(prompt)
    assert m, prompt
    a, op, b = int(m[1]), m[2], int(m[3])
    return a, op, b, (a + b if op == "+" else a * b)


# ---------------------------------------------------------------- registry

def test_list_tasks():
    assert list_tasks() == ["arithmetic", "gsm8k"]


def test_unknown_task_lists_available_and_close_matches():
    with pytest.raises(ValueError) as e:
        get_task("arithmetc")
    assert isinstance(e.value, UnknownTaskError)
    msg = str(e.value)
    assert "Did you mean: arithmetic" in msg and "Available tasks: arithmetic, gsm8k" in msg
    with pytest.raises(ValueError, match="Available tasks: arithmetic, gsm8k"):
        get_task("chess")


def test_tasks_satisfy_protocol():
    assert isinstance(get_task("arithmetic"), Task)
    assert isinstance(get_task("gsm8k", data_dir=GSM8K_DIR), Task)


def test_arithmetic_does_not_import_tfds():
    code = ("import sys, rlzoo.tasks as t; t.get_task('arithmetic', eval_size=5); "
            "assert 'tensorflow_datasets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- arithmetic

@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(["+", "*"]), st.integers(1, 10**9),
       st.floats(0.0, 2.0))
def test_arithmetic_solution_is_true_result_and_rewarded(a, b, op, delta, fw):
    task = arith.ArithmeticTask(digits=(1, 7), ops=("+", "*"), eval_size=1, format_weight=fw)
    ex = task.example(a, op, b)
    truth = a + b if op == "+" else a * b
    assert ex.prompt == f"{a}{op}{b}="
    assert int(ex.solution) == truth and ex.answer == ex.solution == str(truth)
    r = task.reward(ex.solution, ex)
    assert r == {"reward": pytest.approx(1.0 + fw), "correct": 1.0, "format": 1.0}
    assert task.reward(ex.solution + "\n", ex)["reward"] == pytest.approx(1.0 + fw)
    for wrong in (str(truth + delta), str(max(truth - delta, 0)) if truth else "1"):
        if wrong == ex.answer:
            continue
        r = task.reward(wrong, ex)
        assert r["correct"] == 0.0 and r["format"] == 1.0 and r["reward"] == pytest.approx(fw)


@pytest.mark.parametrize("completion, correct, fmt", [
    ("82", 1, 1), ("82\n", 1, 1), ("82  \t", 1, 1), (" 82", 1, 0), ("82 apples", 0, 0),
    ("8 2", 0, 0), ("", 0, 0), ("81", 0, 1), ("082", 0, 1), ("+82", 0, 0), ("\u0668\u0662", 0, 0),
])
def test_arithmetic_reward_cases(completion, correct, fmt):
    task = arith.ArithmeticTask(format_weight=0.25)
    ex = task.example(37, "+", 45)
    assert task.reward(completion, ex) == {"reward": pytest.approx(correct + 0.25 * fmt),
                                           "correct": float(correct), "format": float(fmt)}
    # The answer identity agrees with the reward: correct iff it is the reference; a number or None.
    answer = task.answer(completion)
    assert (answer == ex.answer) == bool(correct)
    assert answer is None or (answer.isascii() and answer.isdigit())
    assert fmt == 0 or answer is not None


@given(st.integers(0, 2**32 - 1))
def test_arithmetic_train_examples_are_correct_and_in_range(seed):
    task = arith.ArithmeticTask(digits=(2, 4), ops=("+", "*"), eval_size=10)
    for ex in task.train_examples(np.random.default_rng(seed), 16):
        a, op, b, truth = _solve(ex.prompt)
        assert ex.answer == ex.solution == str(truth)
        for x in (a, b):
            assert 2 <= len(str(x)) <= 4
        assert task.reward(ex.solution, ex)["correct"] == 1.0


def test_arithmetic_one_digit_includes_zero_and_exact_digit_count():
    task = arith.ArithmeticTask(digits=1, ops=("+",), eval_size=5)
    operands = {x for ex in task.train_examples(np.random.default_rng(0), 500) for x in _solve(ex.prompt)[::2][:2]}
    assert operands == set(range(10))
    task = arith.ArithmeticTask(digits=3, eval_size=5)
    for ex in task.train_examples(np.random.default_rng(1), 200):
        a, _, b, _ = _solve(ex.prompt)
        assert 100 <= a <= 999 and 100 <= b <= 999


def _key(prompt: str) -> tuple[str, int, int]:
    a, op, b, _ = _solve(prompt)
    return op, min(a, b), max(a, b)


def test_arithmetic_train_eval_disjoint_small_space_and_covering():
    """One-digit + and *: 200 ordered problems. The eval set is the whole held-out partition,
    training never draws an eval problem nor its mirror image, and train ∪ eval is everything."""
    task = arith.ArithmeticTask(digits=1, ops=("+", "*"), eval_size=10**6)
    eval_keys = {_key(e.prompt) for e in task.eval_examples()}
    train_keys = {_key(e.prompt) for e in task.train_examples(np.random.default_rng(0), 4000)}
    assert eval_keys and not eval_keys & train_keys
    all_keys = {(op, min(a, b), max(a, b)) for op in "+*" for a in range(10) for b in range(10)}
    assert eval_keys | train_keys == all_keys
    # mirror images of held-out problems are held out too
    prompts = {e.prompt for e in task.eval_examples()}
    for p in prompts:
        a, op, b, _ = _solve(p)
        assert f"{b}{op}{a}=" in prompts


@pytest.mark.parametrize("digits", [2, 6, (3, 9)])
def test_arithmetic_train_eval_disjoint(digits):
    task = arith.ArithmeticTask(digits=digits, ops=("+", "*"), eval_size=100)
    evals = task.eval_examples()
    assert len(evals) == 100 and len({e.prompt for e in evals}) == 100
    eval_keys = {_key(e.prompt) for e in evals}
    train = task.train_examples(np.random.default_rng(3), 3000)
    assert not eval_keys & {_key(e.prompt) for e in train}
    # the partition is a fixed property of the problem, not of the seed
    other = arith.ArithmeticTask(digits=digits, ops=("+", "*"), eval_size=100, seed=7)
    assert all(task.is_held_out(*_solve(e.prompt)[:3]) for e in other.eval_examples())
    assert not any(task.is_held_out(*_solve(e.prompt)[:3]) for e in train)


def test_arithmetic_determinism():
    task = arith.ArithmeticTask(digits=3, ops=("+", "*"))
    a = task.train_examples(np.random.default_rng(42), 50)
    b = task.train_examples(np.random.default_rng(42), 50)
    c = task.train_examples(np.random.default_rng(43), 50)
    assert a == b and a != c
    rng = np.random.default_rng(5)
    first, second = task.train_examples(rng, 20), task.train_examples(rng, 20)
    assert first != second
    assert task.eval_examples() == arith.ArithmeticTask(digits=3, ops=("+", "*")).eval_examples()
    assert task.eval_examples() != arith.ArithmeticTask(digits=3, ops=("+", "*"), seed=1).eval_examples()


def test_arithmetic_get_task_kwargs_and_validation():
    task = get_task("arithmetic", digits=4, ops=("*",), eval_size=7, seed=3, format_weight=0.5)
    assert len(task.eval_examples()) == 7 and all("*" in e.prompt for e in task.eval_examples())
    assert task.reward_names == ("correct", "format")
    for bad in (dict(digits=0), dict(digits=(3, 2)), dict(digits=19), dict(ops=("-",)), dict(ops=()),
                dict(holdout_fraction=0.0), dict(eval_size=-1)):
        with pytest.raises(ValueError):
            arith.ArithmeticTask(**bad)


def test_arithmetic_held_out_fraction():
    values = range(10, 100)
    held = sum(arith.held_out(a, "+", b, 0.1) for a in values for b in values)
    assert 0.07 < held / len(values) ** 2 < 0.13


# ---------------------------------------------------------------- gsm8k: extraction

@pytest.mark.parametrize("text, expected", [
    ("#### 1,234", "1234"),
    ("#### $5", "5"),
    ("#### -3", "-3"),
    ("#### -$3.50", "-3.5"),
    ("#### $-3.50", "-3.5"),
    ("#### 3.50", "3.5"),
    ("#### 0.25", "0.25"),
    ("#### .5", "0.5"),
    ("####5", "5"),
    ("#### $ 1,000,000", "1000000"),
    ("#### 18.", "18"),
    ("#### 0.0", "0"),
    ("#### 1200", "1200"),
    ("#### 120.500", "120.5"),
    ("#### " + "9" * 40, "9" * 40),  # exact beyond Decimal's 28-digit context
    ("She has 3 + 4 = 7 apples.\n#### 7 apples", "7"),
    ("#### 1\nwait, no\n#### 2", "2"),
    ("#### 2\n#### nothing", "2"),
    ("The answer is 7.", None),
    ("#### abc", None),
    ("### 7", None),
    ("", None),
])
def test_gsm8k_extract_answer(text, expected):
    assert gsm8k.extract_answer(text) == expected


@given(st.integers(-10**12, 10**12), st.integers(0, 4), st.booleans(), st.booleans(), st.booleans())
def test_gsm8k_extract_roundtrip(n, scale, commas, dollar, space):
    value = decimal.Decimal(n).scaleb(-scale)
    digits = f"{abs(n):,}" if commas and scale == 0 else format(abs(value), "f")
    text = ("-" if n < 0 else "") + ("$" if dollar else "") + digits
    got = gsm8k.extract_answer(f"reasoning 12 + 3 = 15\n####{' ' if space else ''}{text}\n")
    assert got is not None and decimal.Decimal(got) == value
    assert gsm8k.answers_match(got, str(value)) and not gsm8k.answers_match(got, str(value + 1))


def test_gsm8k_answers_match():
    assert gsm8k.answers_match("18", "18.00")
    assert gsm8k.answers_match("1,234", "1234")
    assert gsm8k.answers_match("$5", "5")
    assert not gsm8k.answers_match("-5", "5")
    assert not gsm8k.answers_match(None, "5")
    assert not gsm8k.answers_match("five", "5")
    assert not gsm8k.answers_match("Infinity", "Infinity") and not gsm8k.answers_match("NaN", "NaN")
    assert not gsm8k.answers_match("1" + "0" * 30 + "1", "1" + "0" * 31)


# ---------------------------------------------------------------- gsm8k: data and task

def test_gsm8k_fixture_reads_through_tfds_data_source():
    import tensorflow_datasets as tfds

    script = _fixture_script()
    for split, rows in (("train", script.TRAIN), ("test", script.TEST)):
        source = tfds.data_source("gsm8k", split=split, data_dir=str(GSM8K_DIR), download=False)
        records = [source[i] for i in range(len(source))]
        assert len(records) == len(rows)
        assert all(set(r) == {"question", "answer", "annotation", "short_answer"} for r in records)
        assert {r["question"].decode() for r in records} == {q for q, _ in rows}
        for r in records:
            answer = r["answer"].decode()
            assert answer == r["annotation"].decode() + "#### " + r["short_answer"].decode()
    assert "tensorflow" not in sys.modules


def test_gsm8k_task_examples_and_rewards():
    task = get_task("gsm8k", data_dir=GSM8K_DIR, format_weight=0.2)
    script = _fixture_script()
    evals = task.eval_examples()
    assert len(evals) == len(script.TEST) == 4
    train = task.train_examples(np.random.default_rng(0), len(script.TRAIN))
    assert {e.solution for e in train} == {a for _, a in script.TRAIN}  # n <= size: distinct
    questions = {q: a for q, a in script.TRAIN + script.TEST}
    assert not {e.prompt for e in train} & {e.prompt for e in evals}
    for ex in train + evals:
        question = ex.prompt.split("\n")[0]
        assert questions[question] == ex.solution
        assert '"#### <number>"' in ex.prompt
        short = ex.solution.rsplit("#### ", 1)[1]
        assert decimal.Decimal(short.replace(",", "")) == decimal.Decimal(ex.answer)
        assert task.reward(ex.solution, ex) == {"reward": pytest.approx(1.2), "correct": 1.0, "format": 1.0}
        wrong = str(decimal.Decimal(ex.answer) + 1)
        assert task.reward(f"I think so.\n#### {wrong}", ex) == {"reward": pytest.approx(0.2), "correct": 0.0,
                                                                  "format": 1.0}
        assert task.reward(f"The answer is {ex.answer}.", ex) == {"reward": 0.0, "correct": 0.0, "format": 0.0}
    comma = next(e for e in train if e.answer == "1440")
    assert task.reward("so #### $1,440.00", comma)["correct"] == 1.0
    decimal_answer = next(e for e in train if e.answer == "11.75")
    assert task.reward("#### 11.750", decimal_answer)["correct"] == 1.0
    # Answer identities: the same number however it is written, None without "####".
    assert task.answer("so #### $1,440.00") == task.answer("#### 1440") == "1440"
    assert task.answer("#### 11.750") == decimal_answer.answer
    assert task.answer("The answer is 1440.") is None


def test_gsm8k_train_examples_determinism_and_eval_size():
    task = gsm8k.GSM8KTask(data_dir=GSM8K_DIR, eval_size=2)
    assert len(task.eval_examples()) == 2
    assert task.eval_examples() == gsm8k.GSM8KTask(data_dir=GSM8K_DIR).eval_examples()[:2]
    a = task.train_examples(np.random.default_rng(1), 5)
    assert a == task.train_examples(np.random.default_rng(1), 5)
    assert len({e.prompt for e in a}) == 5
    many = task.train_examples(np.random.default_rng(1), 20)  # more than the 8 problems: with replacement
    assert len(many) == 20 and len({e.prompt for e in many}) <= 8
    assert all(isinstance(e, Example) for e in many)


def test_gsm8k_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        get_task("gsm8k", data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert isinstance(e.value, gsm8k.GSM8KDataNotFoundError)
    assert str(tmp_path / "nowhere") in msg
    assert "gsm8k/1.0.0/dataset_info.json" in msg and "gsm8k-train.array_record-00000-of-0000N" in msg
    assert "prepare_gsm8k" in msg


def test_gsm8k_missing_split_is_a_clear_error(tmp_path):
    shutil.copytree(GSM8K_DIR, tmp_path / "data")
    for p in (tmp_path / "data" / "gsm8k" / "1.0.0").glob("gsm8k-test.*"):
        p.unlink()
    with pytest.raises(gsm8k.GSM8KDataNotFoundError, match="no ArrayRecord shards for split 'test'"):
        get_task("gsm8k", data_dir=tmp_path / "data")
    with pytest.raises(gsm8k.GSM8KDataNotFoundError, match="split 'validation'"):
        get_task("gsm8k", data_dir=GSM8K_DIR, eval_split="validation")


def test_prepare_gsm8k_roundtrip(tmp_path):
    rows = [{"question": "What is 2 + 2?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"},
            {"question": "What is 10 - 13?", "answer": "10 - 13 = <<10-13=-3>>-3\n#### -3"}]
    for split in ("train", "test"):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    out = gsm8k.prepare_gsm8k(tmp_path / "data", {s: tmp_path / f"{s}.jsonl" for s in ("train", "test")})
    assert out == tmp_path / "data" / "gsm8k" / "1.0.0"
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_info.json", "features.json",
        "gsm8k-test.array_record-00000-of-00001", "gsm8k-train.array_record-00000-of-00001"]
    task = gsm8k.GSM8KTask(data_dir=tmp_path / "data", instruction="")
    assert sorted((e.prompt, e.answer) for e in task.eval_examples()) == [("What is 10 - 13?", "-3"),
                                                                         ("What is 2 + 2?", "4")]
