"""Rollout -> Rollout transforms (`rlzoo.experience.row_transforms`): pair
construction from groups of K on-policy samples and the dynamic-sampling
filter of all-equal groups."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.experience.row_transforms import drop_degenerate_groups, make_pairs
from rlzoo.testing import loss_and_grad, random_batch

K, G, T = 4, 3, 10
B = K * G
rewards_st = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]), min_size=B, max_size=B)
weights_st = st.lists(st.sampled_from([0.0, 1.0, 1.0, 1.0]), min_size=B, max_size=B)


def _batch(rewards, weights=None):
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))
    if weights is not None:
        rollout = rollout.replace(sample_weight=jnp.asarray(weights, jnp.float32))
    return rollout


@given(rewards_st, weights_st)
def test_best_vs_worst_picks_extreme_kept_rows(rewards, weights):
    rollout = _batch(rewards, weights)
    pairs = make_pairs(rollout, "best_vs_worst")
    assert pairs.group_size == 2 and pairs.batch_size == 2 * G
    r, w = np.asarray(rewards).reshape(G, K), np.asarray(weights).reshape(G, K)
    out_r = np.asarray(pairs.rewards).reshape(G, 2)
    out_w = np.asarray(pairs.sample_weight).reshape(G, 2)
    for g in range(G):
        kept = r[g][w[g] > 0]
        if kept.size >= 2:
            assert out_r[g, 0] == kept.max() and out_r[g, 1] == kept.min()
            assert np.all(out_w[g] == 1.0)
        else:
            assert np.all(out_w[g] == 0.0)


def test_pairs_carry_their_rows():
    """Every field of an output row is the field of the source row it names."""
    rollout, _ = random_batch(3, B, T, K)
    pairs = make_pairs(rollout, "all_pairs")
    src_tokens = np.asarray(rollout.tokens)
    out_tokens = np.asarray(pairs.tokens)
    combos = list(itertools.combinations(range(K), 2))
    for g in range(G):
        for p, (i, j) in enumerate(combos):
            row = 2 * (g * len(combos) + p)
            np.testing.assert_array_equal(out_tokens[row], src_tokens[g * K + i])
            np.testing.assert_array_equal(out_tokens[row + 1], src_tokens[g * K + j])
            for name in ("ref_logprobs", "behaviour_logprobs", "loss_mask", "rewards", "prompt_ids"):
                out, src = np.asarray(getattr(pairs, name)), np.asarray(getattr(rollout, name))
                np.testing.assert_array_equal(out[row], src[g * K + i])
                np.testing.assert_array_equal(out[row + 1], src[g * K + j])


@given(rewards_st, st.sampled_from([0.0, 0.4, 1.0, 2.5]))
def test_all_pairs_count_and_margin_filter(rewards, margin):
    rollout = _batch(rewards)
    pairs = make_pairs(rollout, "all_pairs", margin=margin)
    n_pairs = G * K * (K - 1) // 2
    assert pairs.batch_size == 2 * n_pairs and pairs.group_size == 2
    r = np.asarray(rewards).reshape(G, K)
    expected = [
        float(abs(r[g, i] - r[g, j]) >= margin)
        for g in range(G) for i, j in itertools.combinations(range(K), 2)
    ]
    weight = np.asarray(pairs.sample_weight).reshape(n_pairs, 2)
    np.testing.assert_array_equal(weight[:, 0], expected)
    np.testing.assert_array_equal(weight[:, 1], expected)


@pytest.mark.parametrize("mode", ["best_vs_worst", "all_pairs"])
def test_jit_matches_eager(mode):
    rollout, _ = random_batch(5, B, T, K)
    fn = functools.partial(make_pairs, mode=mode, margin=0.3)
    eager, compiled = fn(rollout), jax.jit(fn)(rollout)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(compiled)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert compiled.group_size == 2 and compiled.normaliser is None


def test_groups_of_two_give_the_same_dpo_loss():
    """For K = 2 best-vs-worst returns each pair itself (chosen first): DPO's
    loss and gradient are unchanged up to the row order."""
    dpo = get_algorithm("dpo")
    rollout, stats = random_batch(7, 8, T, 2)
    pairs = make_pairs(rollout, "best_vs_worst")
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    order = np.stack([np.argmax(r, 1), np.argmin(r, 1)], 1) + 2 * np.arange(4)[:, None]
    order = order.reshape(-1)
    stats_pairs = jax.tree.map(lambda x: x[order], stats)
    loss, _, grads = loss_and_grad(dpo, dpo.Config(), stats, rollout)
    loss2, _, grads2 = loss_and_grad(dpo, dpo.Config(), stats_pairs, pairs)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grads.logprobs)[order], grads2.logprobs, rtol=1e-5, atol=1e-7)


def test_online_pairwise_loss_gradient_sums_over_a_rows_pairs():
    """A pairwise loss on all pairs of a group: the gradient of a source row
    is the sum of the gradients of its copies, computed row by row."""
    ipo = get_algorithm("ipo")
    rollout, stats = random_batch(9, B, T, K)
    index = np.array([g * K + i for g in range(G) for pair in itertools.combinations(range(K), 2) for i in pair])
    pairs = make_pairs(rollout, "all_pairs")

    def objective(logprobs):
        gathered = jax.tree.map(lambda x: x[index], stats).replace(logprobs=logprobs[index])
        adv, _ = ipo.advantages(pairs, ipo.Config(), ())
        return ipo.loss(gathered, pairs, adv, ipo.Config(), ())[0]

    grad = jax.grad(objective)(stats.logprobs)
    _, _, pair_grads = loss_and_grad(ipo, ipo.Config(), jax.tree.map(lambda x: x[index], stats), pairs)
    expected = np.zeros(stats.logprobs.shape, np.float32)
    np.add.at(expected, index, np.asarray(pair_grads.logprobs))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert np.isfinite(objective(stats.logprobs))


def test_rejects_bad_arguments():
    rollout, _ = random_batch(0, 4, T, 1)
    with pytest.raises(ValueError, match="at least two rows"):
        make_pairs(rollout)
    rollout, _ = random_batch(0, B, T, K)
    with pytest.raises(ValueError, match="unknown pair mode"):
        make_pairs(rollout, "worst")


def _naive_drop(rewards, weights):
    out = np.asarray(weights, np.float32).copy()
    for g in range(G):
        rows = range(g * K, (g + 1) * K)
        if len({rewards[r] for r in rows}) == 1:
            for r in rows:
                out[r] = 0.0
    return out


@given(rewards_st, weights_st)
def test_drop_degenerate_groups_zeroes_all_equal_groups(rewards, weights):
    rollout = _batch(rewards, weights).with_normaliser()
    kept = drop_degenerate_groups(rollout)
    np.testing.assert_array_equal(kept.sample_weight, _naive_drop(rewards, weights))
    assert kept.normaliser is None and kept.group_size == K
    np.testing.assert_array_equal(kept.tokens, rollout.tokens)
    np.testing.assert_array_equal(kept.rewards, rollout.rewards)


def test_drop_degenerate_groups_jit_matches_eager():
    rewards = [1.0] * K + [0.0, 1.0, 0.0, 0.0] + [2.0] * K
    rollout = _batch(rewards)
    eager, compiled = drop_degenerate_groups(rollout), jax.jit(drop_degenerate_groups)(rollout)
    want = np.asarray([0.0] * K + [1.0] * K + [0.0] * K, np.float32)
    np.testing.assert_array_equal(eager.sample_weight, want)
    np.testing.assert_array_equal(compiled.sample_weight, want)
    assert compiled.normaliser is None
