"""Malformed rollouts get a clear ValueError naming the field and the shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, make_rollout, ops, validate
from rlzoo.rollout import Rollout, concat_rows
from rlzoo.testing import random_batch

B, T, K = 8, 6, 4


def good(**overrides):
    mask = np.zeros((B, T), bool)
    mask[:, 2:5] = True
    kw = dict(tokens=np.ones((B, T), np.int32), loss_mask=mask, rewards=np.arange(B, dtype=np.float32))
    kw.update(overrides)
    return kw


def test_well_formed_rollout_passes():
    rollout = make_rollout(**good(), group_size=K)
    assert rollout.batch_size == B and rollout.num_groups == 2


@pytest.mark.parametrize(
    "overrides, group_size, message",
    [
        ({"tokens": np.ones((B,), np.int32)}, K, r"Rollout.tokens must have shape \[B, T\]"),
        ({"tokens": np.ones((B, T, 1), np.int32)}, K, r"Rollout.tokens must have shape \[B, T\]"),
        ({}, 3, r"B=8 is not divisible by group_size K=3"),
        ({"loss_mask": np.ones((B, T + 1), bool)}, K, r"Rollout.loss_mask must have shape \[B, T\] = \[8, 6\].*axis 1: T should be 6"),
        ({"rewards": np.zeros((B, 1), np.float32)}, K, r"Rollout.rewards must have shape \[B\] = \[8\], got rank 2"),
        ({"rewards": np.zeros((B - 1,), np.float32)}, K, r"Rollout.rewards must have shape \[B\].*B should be 8"),
        ({"loss_mask": np.ones((B, T), bool)}, K, r"loss_mask\[:, 0\] must be False"),
        ({"rewards": np.array([0, 1, np.nan, 0, 0, 0, np.inf, 0], np.float32)}, K, r"Rollout.rewards has non-finite entries at \[\[2\], \[6\]\]"),
        ({"ref_logprobs": np.zeros((B, T - 2), np.float32)}, K, r"Rollout.ref_logprobs must have shape \[B, T\]"),
        ({"reward_components": np.zeros((B,), np.float32)}, K, r"Rollout.reward_components must have shape \[B, C\]"),
        ({"sample_weight": -np.ones((B,), np.float32)}, K, r"sample_weight must be >= 0"),
        ({"bogus_field": np.zeros(B)}, K, r"unknown Rollout field\(s\): \['bogus_field'\]"),
    ],
    ids=["rank-1-tokens", "rank-3-tokens", "group-size", "mask-length", "reward-rank",
         "reward-length", "mask-at-0", "nan-reward", "ref-length", "components-rank",
         "negative-weight", "unknown-field"],
)
def test_malformed_rollout_raises_clear_error(overrides, group_size, message):
    with pytest.raises(ValueError, match=message):
        make_rollout(**good(**overrides), group_size=group_size)


def turns(**overrides):
    """Turn fields for good(): turn 1 on tokens 2-3, turn 2 on token 4, N = 3 turn slots."""
    turn_ids = np.zeros((B, T), np.int32)
    turn_ids[:, 2:4], turn_ids[:, 4] = 1, 2
    kw = dict(turn_ids=turn_ids, turn_rewards=np.zeros((B, 3), np.float32),
              state_keys=np.full((B, 3), -1, np.int32), num_turns=np.full((B,), 2, np.int32))
    kw.update(overrides)
    return kw


@pytest.mark.parametrize("overrides, message", [
    ({"turn_ids": np.zeros((B, T), np.int32)}, r"loss_mask is True on tokens with turn_ids 0"),
    ({"num_turns": np.ones((B,), np.int32)}, r"turn_ids exceed Rollout.num_turns"),
    ({"state_keys": np.zeros((B, 4), np.int32)}, r"state_keys must have shape \[B, N\] = \[8, 3\].*N should be 3"),
    ({"turn_rewards": np.zeros((B, 1), np.float32), "state_keys": None}, r"past the N = 1 slots"),
    ({"turn_rewards": np.full((B, 3), np.nan, np.float32)}, r"turn_rewards has non-finite entries"),
    ({"turn_ids": -np.ones((B, T), np.int32)}, r"turn_ids must be >= 0"),
], ids=["mask-outside-turns", "more-turns-than-num-turns", "mismatched-n", "turn-past-n", "nan-turn-reward",
        "negative-turn"])
def test_turn_fields_are_checked_against_each_other_and_the_mask(overrides, message):
    rollout = make_rollout(**good(), group_size=K)
    validate(rollout.replace(**turns()))
    with pytest.raises(ValueError, match=message):
        validate(rollout.replace(**turns(**overrides)))


def test_wrong_dtype_is_named():
    rollout = make_rollout(**good(), group_size=K)
    with pytest.raises(ValueError, match=r"Rollout.loss_mask must have a bool dtype, got float32"):
        validate(rollout.replace(loss_mask=rollout.loss_mask.astype(jnp.float32)))


def test_algorithm_names_missing_fields():
    rollout = make_rollout(**good(), group_size=K)
    grpo = get_algorithm("grpo")
    with pytest.raises(ValueError, match=r"needs Rollout field\(s\) \['ref_logprobs'\]"):
        grpo.validate(rollout, grpo.Config())
    grpo.validate(rollout, grpo.Config(kl_coef=0.0))  # no KL term: no reference needed


def test_validate_is_safe_under_jit():
    rollout, _ = random_batch(0, B, T, K)
    jax.jit(lambda r: validate(r).rewards.sum())(rollout)


def test_microbatches_split_at_group_boundaries_and_share_the_normaliser():
    rollout, _ = random_batch(0, 16, T, K)
    parts = rollout.microbatches(2)
    assert [p.batch_size for p in parts] == [8, 8]
    whole = rollout.with_normaliser().normaliser
    for part in parts:
        assert part.normaliser.tokens == whole.tokens and part.normaliser.rows == whole.rows
    with pytest.raises(ValueError, match="at group boundaries"):
        rollout.microbatches(3)


def test_rollout_is_a_pytree_with_static_group_size():
    rollout, _ = random_batch(0, B, T, K)
    leaves, treedef = jax.tree.flatten(rollout)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt, Rollout) and rebuilt.group_size == K


@given(st.integers(0, 2**16), st.integers(4, 12), st.integers(4, 12))
def test_concat_rows_keeps_rows_and_pads_untrained_positions(seed, t1, t2):
    """Rows keep their values on their own positions; the padding is zero and
    untrained, so a loss over the joined batch is the loss over both parts."""
    a, stats_a = random_batch(seed, 4, t1, 2)
    b, stats_b = random_batch(seed + 1, 6, t2, 2)
    joined = validate(concat_rows([a, b]))
    assert joined.batch_size == 10 and joined.seq_len == max(t1, t2) and joined.group_size == 2
    for part, rows in ((a, slice(0, 4)), (b, slice(4, 10))):
        for name in ("tokens", "loss_mask", "behaviour_logprobs", "old_topk_logprobs", "rewards", "answer_ids"):
            mine, theirs = np.asarray(getattr(part, name)), np.asarray(getattr(joined, name))[rows]
            np.testing.assert_array_equal(theirs[:, :mine.shape[1]] if mine.ndim > 1 else theirs, mine)
            if mine.ndim > 1:
                assert not np.any(theirs[:, mine.shape[1]:]), name
    # Token-mean GRPO over the joined batch = the token-weighted mean of the parts' losses.
    algo = get_algorithm("grpo")
    cfg = algo.Config(aggregation="token-mean", kl_coef=0.0)
    t = max(t1, t2)
    pad = lambda x: jnp.pad(x, [(0, 0), (0, t - x.shape[1])])  # noqa: E731
    stats = stats_a.replace(logprobs=jnp.concatenate([pad(stats_a.logprobs), pad(stats_b.logprobs)]),
                            entropy=None, values=None, topk_logprobs=None)
    adv_a, adv_b = (algo.advantages(r, cfg, ())[0] for r in (a, b))
    joined_loss, _ = algo.loss(stats, joined.with_normaliser(), jnp.concatenate([pad(adv_a), pad(adv_b)]), cfg, ())
    parts = [(float(algo.loss(st_, r.with_normaliser(), adv, cfg, ())[0]), float(ops.weighted_mask(r).sum()))
             for st_, r, adv in ((stats_a, a, adv_a), (stats_b, b, adv_b))]
    want = sum(loss * n for loss, n in parts) / sum(n for _, n in parts)
    np.testing.assert_allclose(float(joined_loss), want, rtol=1e-5, atol=1e-6)


def test_concat_rows_rejects_mismatched_parts():
    a, _ = random_batch(0, 4, 6, 2)
    b, _ = random_batch(1, 4, 6, 4)
    with pytest.raises(ValueError, match="group sizes"):
        concat_rows([a, b])
    with pytest.raises(ValueError, match="answer_ids"):
        concat_rows([a, a.replace(answer_ids=None)])
    with pytest.raises(ValueError, match="at least one"):
        concat_rows([])
