"""Offline preference data: jsonl / TFDS records into Rollouts of pairs."""

import json
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

from rlzoo import get_algorithm, preference_data as pd
from rlzoo.testing import loss_and_grad

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "preference_pairs.jsonl"


class TinyTokenizer:
    """Characters as ids 3.. ; 0 pad, 1 eos (no bos)."""

    pad_id, eos_id = 0, 1

    def encode(self, text):
        return [3 + (ord(c) % 97) for c in text]


def fake_ref(tokens):
    """A deterministic 'reference model': depends on the token and its predecessor."""
    tokens = np.asarray(tokens)
    prev = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
    return -0.01 * (tokens % 13) - 0.001 * (prev % 7) - 0.5


def test_jsonl_fixture_reads_eight_records():
    records = pd.read_jsonl(FIXTURE)
    assert len(records) == 8
    assert all({"prompt", "chosen", "rejected"} <= set(r) for r in records)


def test_rollout_layout_matches_an_independent_encoding():
    tok = TinyTokenizer()
    records = pd.read_jsonl(FIXTURE)
    rollout = pd.preference_rollout(records, tok, fake_ref, max_length=96)
    assert rollout.group_size == 2 and rollout.batch_size == 16
    tokens, mask = np.asarray(rollout.tokens), np.asarray(rollout.loss_mask)
    for i, r in enumerate(records):
        prompt = tok.encode(r["prompt"])
        for row, key in ((2 * i, "chosen"), (2 * i + 1, "rejected")):
            response = tok.encode(r[key]) + [tok.eos_id]
            n = len(prompt) + len(response)
            assert tokens[row, :n].tolist() == prompt + response
            assert np.all(tokens[row, n:] == tok.pad_id)
            assert mask[row].tolist() == [False] * len(prompt) + [True] * len(response) + [False] * (tokens.shape[1] - n)
    np.testing.assert_array_equal(rollout.rewards, np.tile([1.0, 0.0], 8))
    np.testing.assert_array_equal(rollout.prompt_ids, np.repeat(np.arange(8), 2))
    # reference log-probs are the function's values on response tokens, 0 elsewhere
    np.testing.assert_allclose(rollout.ref_logprobs, np.where(mask, fake_ref(tokens), 0.0), rtol=1e-6)
    # scores in the fixture become the single reward component
    scores = [[r[k]] for r in records for k in ("score_chosen", "score_rejected")]
    np.testing.assert_allclose(rollout.reward_components, scores)


def test_reference_function_is_called_in_chunks_once():
    calls = []

    def counting_ref(tokens):
        calls.append(np.asarray(tokens).shape[0])
        return fake_ref(tokens)

    pd.load_jsonl_pairs(FIXTURE, TinyTokenizer(), counting_ref, max_length=96, batch_rows=5)
    assert calls == [5, 5, 5, 1]


def test_truncation_keeps_prompt_tail_and_response_head():
    tok = TinyTokenizer()
    record = {"prompt": "abcdefghij", "chosen": "0123456789", "rejected": "xy"}
    prompt, chosen, rejected = pd.encode_pair(record, tok, max_length=8, max_prompt_length=3)
    assert prompt == tok.encode("hij")
    assert chosen == tok.encode("01234")
    assert rejected == tok.encode("xy") + [tok.eos_id]


def test_empty_prompt_gets_a_start_token():
    prompt, _, _ = pd.encode_pair({"prompt": "", "chosen": "a", "rejected": "b"}, TinyTokenizer(), 8)
    assert prompt == [TinyTokenizer.eos_id]


def test_byte_tokenizer_and_dpo_at_the_reference():
    """With the policy equal to the reference, DPO on the loaded pairs is log 2."""
    tokenizers = pytest.importorskip("rlzoo.tokenizers")
    tok = tokenizers.ByteTokenizer()
    rollout = pd.load_jsonl_pairs(FIXTURE, tok, fake_ref, max_length=128)
    assert np.all(np.asarray(rollout.tokens)[:, 0] == tok.bos_id)
    dpo = get_algorithm("dpo")
    stats_logp = rollout.ref_logprobs
    from rlzoo.rollout import PolicyStats

    loss, _, _ = loss_and_grad(dpo, dpo.Config(), PolicyStats(logprobs=stats_logp), rollout)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)


def test_iterate_pairs_keeps_pairs_together():
    rollout = pd.load_jsonl_pairs(FIXTURE, TinyTokenizer(), fake_ref, max_length=96)
    batches = list(pd.iterate_pairs(rollout, 3, shuffle_seed=1))
    assert len(batches) == 2
    seen = []
    for batch in batches:
        ids = np.asarray(batch.prompt_ids).reshape(-1, 2)
        assert np.all(ids[:, 0] == ids[:, 1])
        np.testing.assert_array_equal(np.asarray(batch.rewards).reshape(-1, 2), [[1.0, 0.0]] * 3)
        assert float(batch.normaliser.rows) == 6.0
        seen += ids[:, 0].tolist()
    assert len(set(seen)) == 6


def test_records_without_scores_have_no_components(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}) for _ in range(2)) + "\n\n")
    rollout = pd.load_jsonl_pairs(path, TinyTokenizer(), fake_ref, max_length=16)
    assert rollout.reward_components is None and rollout.batch_size == 4


def test_bad_records_and_reference_are_rejected(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(ValueError, match="rejected"):
        pd.read_jsonl(path)
    records = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    with pytest.raises(ValueError, match="shape"):
        pd.preference_rollout(records, TinyTokenizer(), lambda t: np.zeros((1, 1)), max_length=8)


@pytest.mark.parametrize("lines, message", [
    # Line 2 has 26 characters and stops where a value should start, at column 27.
    (['{"prompt": "p", "chosen": "c", "rejected": "r"}', '{"prompt": "p", "chosen": '], r":2: invalid JSON \(Expecting value at column 27\)"),
    (['{"prompt": "p", "chosen": "c", "rejected": "r"}', "", '{"prompt": "p", "chosen": "c"}'], r":3: missing or non-string field\(s\) \['rejected'\]"),
    (['["p", "c", "r"]'], r":1: a preference record must be a JSON object, got list"),
    ([], r": no preference records \(the file is empty or blank\)"),
    (["", "  "], r": no preference records \(the file is empty or blank\)"),
])
def test_jsonl_errors_name_the_file_and_line(tmp_path, lines, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=re.escape(str(path)) + message):
        pd.read_jsonl(path)


def test_iterate_pairs_rejects_batches_larger_than_the_data():
    """8 pairs cannot fill a batch of 9: with drop_remainder that used to yield no batch at all."""
    rollout = pd.load_jsonl_pairs(FIXTURE, TinyTokenizer(), fake_ref, max_length=96)
    with pytest.raises(ValueError, match=r"pairs_per_batch=9 is larger than the data \(8 pairs\)"):
        pd.iterate_pairs(rollout, 9)
    with pytest.raises(ValueError, match="pairs_per_batch must be >= 1"):
        pd.iterate_pairs(rollout, 0)
    # Without drop_remainder the one batch holds every pair.
    (only,) = pd.iterate_pairs(rollout, 9, drop_remainder=False)
    assert only.batch_size == 16
    assert len(list(pd.iterate_pairs(rollout, 8))) == 1


def test_tfds_records_decode_a_data_source():
    """`tfds_records` reads any `data_source`-like object (no network, no TF)."""

    class Source:
        def __init__(self, examples):
            self.examples = examples

        def __len__(self):
            return len(self.examples)

        def __getitem__(self, i):
            return self.examples[i]

    examples = [{"question": b"q%d" % i, "good": "g".encode(), "bad": np.array(b"b")} for i in range(3)]
    calls = {}

    def data_source(name, split, data_dir):
        calls.update(name=name, split=split, data_dir=data_dir)
        return Source(examples)

    records = list(pd.tfds_records(
        "my_prefs", "test", data_dir="/data", prompt_key="question", chosen_key="good",
        rejected_key="bad", limit=2, data_source=data_source,
    ))
    assert calls == {"name": "my_prefs", "split": "test", "data_dir": "/data"}
    assert records == [{"prompt": "q0", "chosen": "g", "rejected": "b"}, {"prompt": "q1", "chosen": "g", "rejected": "b"}]
    rollout = pd.preference_rollout(records, TinyTokenizer(), fake_ref, max_length=8)
    assert rollout.batch_size == 4 and float(jnp.sum(rollout.rewards)) == 2.0
