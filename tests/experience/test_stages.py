"""Each experience stage on its own, without a Trainer: prompt stream,
scoring, dynamic-sampling refill, filter weights, forwards, hand-off."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo.experience import filtering, forwards, handoff, prompts, row_transforms, scoring
from rlzoo.rollout import PolicyStats
from rlzoo.sharding import make_mesh
from rlzoo.tasks import Example, get_task
from rlzoo.testing import random_batch

K = 4


def batch_with_rewards(rewards, seed=0):
    rewards = np.asarray(rewards, np.float32)
    rollout, _ = random_batch(seed, batch=len(rewards), length=8, group_size=K)
    return rollout.replace(rewards=jnp.asarray(rewards))


def rewards_differ(rollout):
    grouped = np.asarray(rollout.rewards).reshape(-1, K)
    return grouped.max(1) > grouped.min(1)


def test_prompt_stream_is_deterministic_per_step_and_continues_across_rounds():
    task = get_task("arithmetic")
    first = next(prompts.prompt_batches(task, 3, 7, 5))
    stream = prompts.prompt_batches(task, 3, 7, 5)
    again, second = next(stream), next(stream)
    assert [e.prompt for e in first] == [e.prompt for e in again]
    rng = np.random.default_rng([3, 7])
    expected = task.train_examples(rng, 5), task.train_examples(rng, 5)
    assert [e.prompt for e in second] == [e.prompt for e in expected[1]]
    other_step = next(prompts.prompt_batches(task, 3, 8, 5))
    assert [e.prompt for e in other_step] != [e.prompt for e in first]


class TwoRewards:
    """A stand-in task: reward 1 when the completion contains the answer."""

    name, reward_names = "two", ("correct", "short")

    def reward(self, completion, example):
        correct = float(example.answer in completion)
        return {"reward": correct + 0.5 * (len(completion) < 3), "correct": correct, "short": float(len(completion) < 3)}

    def answer(self, completion):
        return completion.strip() or None


def test_scoring_fills_rewards_components_and_ids_per_row():
    rollout, _ = random_batch(0, batch=4, length=6, group_size=2)
    examples = [Example("p0", "7", ""), Example("p1", "9", "")]
    completions = ["7", "x", "the 9", ""]
    scored = scoring.score(TwoRewards(), rollout, completions, examples)
    np.testing.assert_array_equal(scored.rewards, [1.5, 0.5, 1.0, 0.5])
    np.testing.assert_array_equal(scored.reward_components, [[1, 1], [0, 1], [1, 0], [0, 1]])
    ids = np.asarray(scored.prompt_ids)
    assert ids[0] == ids[1] != ids[2] == ids[3]
    assert scored.answer_ids[3] == -1 and scored.answer_ids[0] != scored.answer_ids[1]
    with pytest.raises(ValueError, match="3 completions for 2 prompts x 2 samples"):
        scoring.score(TwoRewards(), rollout, completions[:3], examples)


@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=4), st.integers(1, 4))
def test_refill_puts_kept_groups_first_and_stops_when_full(kept_per_round, max_rounds):
    """Batches are drawn until 3 groups are kept or the rounds run out; the
    batch holds the kept groups in drawing order, then the earliest rejected."""
    batches = []
    for r, kept in enumerate(kept_per_round + [[False] * 3] * 4):
        rewards = [[g, 0, 0, 0] if keep else [0, 0, 0, 0] for g, keep in enumerate(kept, start=10 * r + 1)]
        batches.append(batch_with_rewards(np.asarray(rewards).reshape(-1), seed=r))
    rollout, rounds = filtering.collect(iter(batches), rewards_differ, 3, max_rounds)
    flags = [k for kept in kept_per_round + [[False] * 3] * 4 for k in kept]
    expected_rounds = 1
    while expected_rounds < max_rounds and sum(flags[:3 * expected_rounds]) < 3:
        expected_rounds += 1
    flags = flags[:3 * expected_rounds]
    assert rounds == expected_rounds and rollout.batch_size == 3 * K
    keep = rewards_differ(rollout)
    n = int(keep.sum())
    assert n == min(3, sum(flags)) and keep[:n].all() and not keep[n:].any()
    firsts = np.asarray(rollout.rewards).reshape(-1, K)[:n, 0]
    assert list(firsts) == sorted(firsts), "kept groups keep their drawing order"


def test_no_filter_takes_the_first_batch_unchanged():
    batch = batch_with_rewards(np.arange(8))
    rollout, rounds = filtering.collect(iter([batch]), lambda r: None, 2, 5)
    assert rounds == 1 and rollout is batch


def test_rejected_groups_weigh_zero_and_the_normaliser_is_cleared():
    rollout = batch_with_rewards(np.arange(8)).with_normaliser()
    out = row_transforms.weigh_out_rejected(rollout, np.array([False, True]))
    np.testing.assert_array_equal(out.sample_weight, [0] * 4 + list(np.asarray(rollout.sample_weight)[4:]))
    assert out.normaliser is None


def test_forwards_recompute_behaviour_and_reference_on_the_mask():
    rollout, _ = random_batch(1, batch=4, length=6, group_size=2)

    def stats(offset):
        return lambda params, tokens: PolicyStats(logprobs=jnp.full(tokens.shape, params + offset, jnp.float32))

    out = forwards.with_logprobs(rollout, forwards.Forwards(stats(0.0), stats(-1.0)), -2.0, -3.0, None, step=5)
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_array_equal(out.behaviour_logprobs, np.where(mask, -2.0, 0.0))
    np.testing.assert_array_equal(out.ref_logprobs, np.where(mask, -4.0, 0.0))
    np.testing.assert_array_equal(out.inference_logprobs, rollout.behaviour_logprobs)
    np.testing.assert_array_equal(out.policy_version, [5] * 4)
    moving = forwards.Forwards(stats(0.0), stats(0.0), moving_reference=lambda latest, previous: 2 * latest - previous)
    out = forwards.with_logprobs(rollout, moving, -2.0, -3.0, -1.0, step=0)
    np.testing.assert_array_equal(out.ref_logprobs, np.where(mask, -5.0, 0.0))


def test_handoff_covers_every_row_once_per_epoch_in_whole_groups():
    rollout, _ = random_batch(2, batch=16, length=6, group_size=K)
    targets = {"advantages": jnp.arange(16.0)[:, None] * rollout.loss_mask, "row": jnp.arange(16)}
    mesh = make_mesh(1, 1, 1)
    pieces = list(handoff.minibatches(rollout, targets, epochs=2, count=2, key=jax.random.key(0), mesh=mesh))
    assert len(pieces) == 4
    for epoch in range(2):
        rows = np.concatenate([np.asarray(t["row"]) for _, t in pieces[2 * epoch:2 * epoch + 2]])
        assert sorted(rows) == list(range(16))
        assert all((rows.reshape(-1, K) // K == (rows.reshape(-1, K) // K)[:, :1]).all(1))
    for minibatch, t in pieces:
        np.testing.assert_array_equal(minibatch.tokens, np.asarray(rollout.tokens)[np.asarray(t["row"])])
        assert minibatch.normaliser is not None
    with pytest.raises(ValueError, match="must divide"):
        next(handoff.minibatches(rollout, targets, epochs=1, count=3, key=jax.random.key(0), mesh=mesh))
