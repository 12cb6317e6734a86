"""rlzoo.ops.aggregation against naive re-derivations (numpy loops), each
run eagerly and under jax.jit, and microbatch sums against the minibatch."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import ops
from rlzoo.testing import assert_variants, random_batch

B, T, K = 8, 10, 4
G = B // K
seeds = st.integers(0, 2**16)


def naive_aggregate(x, mask, weight, mode, norm_len):
    x, mask, weight = map(np.asarray, (x, mask, weight))
    m = mask * weight[:, None]
    if mode == "token-mean":
        return (x * m).sum() / max(m.sum(), 1)
    if mode == "token-sum":
        return (x * m).sum()
    rows = []
    for b in range(len(x)):
        token_sum = (x[b] * m[b]).sum()
        if mode == "seq-mean-token-mean":
            rows.append(token_sum / max(mask[b].sum(), 1))
        elif mode == "seq-mean-token-sum":
            rows.append(token_sum)
        else:
            rows.append(token_sum / norm_len)
    return sum(rows) / weight.sum()


def _weighted(seed, **kwargs):
    rollout, stats = random_batch(seed, B, T, K, **kwargs)
    weight = np.asarray([1.0, 0.0, 2.0, 1.0, 0.5, 1.0, 0.0, 1.0], np.float32)
    return rollout.replace(sample_weight=jnp.asarray(weight)), stats, weight


def test_weighted_mask_matches_loop():
    rollout, _, weight = _weighted(0)
    mask = np.asarray(rollout.loss_mask)
    want = np.asarray([[mask[b, t] * weight[b] for t in range(T)] for b in range(B)], np.float32)
    assert_variants(ops.weighted_mask, rollout, expected=want)


@pytest.mark.parametrize("mode", ops.AGGREGATIONS)
def test_token_weights_match_loop(mode):
    rollout, _, weight = _weighted(1, masked_rows=(3,))
    mask = np.asarray(rollout.loss_mask, np.float64)
    n_tokens = sum(mask[b, t] * weight[b] for b in range(B) for t in range(T))
    n_rows = weight.sum()
    want = np.zeros((B, T))
    for b in range(B):
        for t in range(T):
            m = mask[b, t] * weight[b]
            want[b, t] = {
                "token-mean": m / n_tokens,
                "token-sum": m,
                "seq-mean-token-mean": m / (max(mask[b].sum(), 1) * n_rows),
                "seq-mean-token-sum": m / n_rows,
                "seq-mean-token-sum-norm": m / (7 * n_rows),
            }[mode]
    assert_variants(lambda r: ops.token_weights(r, mode, 7), rollout, expected=want.astype(np.float32))


def test_unknown_aggregation_is_rejected():
    rollout, _ = random_batch(0, B, T, K)
    with pytest.raises(ValueError, match="unknown aggregation"):
        ops.token_weights(rollout, "row-mean")


@given(seeds, st.sampled_from(ops.AGGREGATIONS))
def test_aggregate_matches_loop(seed, mode):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(1,))
    weight = np.random.default_rng(seed).integers(0, 2, B).astype(np.float32)
    weight[0] = 1.0
    rollout = rollout.replace(sample_weight=jnp.asarray(weight))
    got = ops.aggregate(stats.logprobs, rollout, mode)
    want = naive_aggregate(stats.logprobs, rollout.loss_mask, weight, mode, T)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("mode", ops.AGGREGATIONS)
def test_aggregate_jit_and_eager(mode):
    rollout, stats, weight = _weighted(2)
    want = np.float32(naive_aggregate(stats.logprobs, rollout.loss_mask, weight, mode, T))
    assert_variants(lambda x, r: ops.aggregate(x, r, mode), stats.logprobs, rollout, expected=want)


@given(seeds, st.sampled_from(ops.AGGREGATIONS), st.sampled_from([2, 4]))
def test_microbatch_sum_equals_minibatch(seed, mode, pieces):
    rollout, stats = random_batch(seed, 16, T, K)
    whole = ops.aggregate(stats.logprobs, rollout, mode)
    rows = 16 // pieces
    parts = [
        ops.aggregate(stats.logprobs[i * rows:(i + 1) * rows], micro, mode)
        for i, micro in enumerate(rollout.microbatches(pieces))
    ]
    np.testing.assert_allclose(sum(parts), whole, rtol=1e-5)


def test_aggregate_ignores_non_finite_values_off_the_mask():
    rollout, stats = random_batch(0, B, T, K)
    poisoned = jnp.where(rollout.loss_mask, stats.logprobs, jnp.nan)
    for mode in ops.AGGREGATIONS:
        assert np.isfinite(ops.aggregate(poisoned, rollout, mode))


def test_aggregate_rows_matches_loop():
    rollout, _, weight = _weighted(3)
    per_row = np.random.default_rng(3).normal(0, 1, B).astype(np.float32)
    per_row[1] = np.nan  # weight 0: ignored
    want = sum(weight[b] * per_row[b] for b in range(B) if weight[b]) / weight.sum()
    assert_variants(ops.aggregate_rows, jnp.asarray(per_row), rollout, expected=np.float32(want))


def test_aggregate_pairs_and_groups_match_loop():
    rollout, _, weight = _weighted(4)
    rng = np.random.default_rng(4)
    per_pair, pair_weight = rng.normal(0, 1, B // 2).astype(np.float32), np.asarray([1, 0, 1, 1], np.float32)
    per_group, group_weight = rng.normal(0, 1, G).astype(np.float32), np.asarray([0.5, 1.0], np.float32)
    want_pairs = sum(pair_weight[p] * per_pair[p] for p in range(B // 2)) / (weight.sum() / 2)
    want_groups = sum(group_weight[g] * per_group[g] for g in range(G)) / (weight.sum() / K)
    assert_variants(
        lambda a, b, c, d, r: (ops.aggregate_pairs(a, b, r), ops.aggregate_groups(c, d, r)),
        jnp.asarray(per_pair), jnp.asarray(pair_weight), jnp.asarray(per_group), jnp.asarray(group_weight), rollout,
        expected=(np.float32(want_pairs), np.float32(want_groups)),
    )


def test_aggregate_group_pairs_matches_loop():
    rollout, _, weight = _weighted(5)
    rng = np.random.default_rng(5)
    per_pair = rng.normal(0, 1, (G, K, K)).astype(np.float32)
    pair_weight = np.zeros((G, K, K), np.float32)
    total = 0.0
    for g in range(G):
        for i, j in itertools.combinations(range(K), 2):
            pair_weight[g, i, j] = min(weight[g * K + i], weight[g * K + j])
            total += pair_weight[g, i, j] * per_pair[g, i, j]
    want = total / (weight.sum() * (K - 1) / 2)
    assert_variants(ops.aggregate_group_pairs, jnp.asarray(per_pair), jnp.asarray(pair_weight), rollout,
                    expected=np.float32(want))


def test_row_pair_and_group_aggregates_sum_over_microbatches():
    rollout, _, _ = _weighted(6)
    rng = np.random.default_rng(6)
    per_row = jnp.asarray(rng.normal(0, 1, B), jnp.float32)
    per_group = jnp.asarray(rng.normal(0, 1, G), jnp.float32)
    per_pair = jnp.asarray(rng.normal(0, 1, (G, K, K)), jnp.float32)
    pair_weight = jnp.asarray(np.triu(np.ones((K, K)), 1)[None].repeat(G, 0), jnp.float32)
    ones = jnp.ones(G)
    micro = rollout.microbatches(G)
    np.testing.assert_allclose(
        sum(ops.aggregate_rows(per_row[g * K:(g + 1) * K], m) for g, m in enumerate(micro)),
        ops.aggregate_rows(per_row, rollout), rtol=1e-5,
    )
    np.testing.assert_allclose(
        sum(ops.aggregate_groups(per_group[g:g + 1], ones[g:g + 1], m) for g, m in enumerate(micro)),
        ops.aggregate_groups(per_group, ones, rollout), rtol=1e-5,
    )
    np.testing.assert_allclose(
        sum(ops.aggregate_group_pairs(per_pair[g:g + 1], pair_weight[g:g + 1], m) for g, m in enumerate(micro)),
        ops.aggregate_group_pairs(per_pair, pair_weight, rollout), rtol=1e-5,
    )


def test_aggregates_reject_mismatched_shapes():
    rollout, stats = random_batch(0, B, T, K)
    with pytest.raises(AssertionError):
        ops.aggregate(stats.logprobs[:, :1], rollout, "token-mean")
    with pytest.raises(AssertionError):
        ops.aggregate_pairs(jnp.zeros(B // 2), jnp.zeros(B), rollout)
