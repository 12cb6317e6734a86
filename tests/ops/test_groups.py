"""rlzoo.ops.groups against naive re-derivations (numpy loops over groups),
each run eagerly and under jax.jit."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import ops
from rlzoo.testing import assert_variants, random_batch

B, T, K = 8, 10, 4
G = B // K


def _members(b):
    """Rows of row b's group."""
    g = b // K
    return range(g * K, (g + 1) * K)


x0 = np.asarray([1.0, 2.0, 4.0, -3.0, 5.0, 5.0, 5.0, 5.0], np.float32)  # the second group is all-equal


# --------------------------------------------------------------------------
# Group views and moments
# --------------------------------------------------------------------------

def test_group_view_rows_in_order():
    x = np.arange(B * 3, dtype=np.float32).reshape(B, 3)
    want = np.stack([np.stack([x[g * K + k] for k in range(K)]) for g in range(G)])
    assert_variants(lambda x: ops.group_view(x, K), jnp.asarray(x), expected=want)
    with pytest.raises(AssertionError):
        ops.group_view(jnp.zeros(B + 1), K)


@pytest.mark.parametrize("ddof", [0, 1])
def test_group_moments_match_loop(ddof):
    means = np.asarray([np.mean([x0[j] for j in _members(b)]) for b in range(B)], np.float32)
    stds = np.asarray(
        [np.sqrt(sum((x0[j] - means[b]) ** 2 for j in _members(b)) / (K - ddof)) for b in range(B)], np.float32
    )
    assert_variants(
        lambda x: (ops.group_mean(x, K), ops.group_std(x, K, ddof), ops.group_centre(x, K),
                   ops.group_zscore(x, K, 1e-6, ddof)),
        jnp.asarray(x0),
        expected=(means, stds, x0 - means, (x0 - means) / (stds + 1e-6)),
    )


def test_leave_one_out_baseline_matches_loop():
    want = np.asarray([np.mean([x0[j] for j in _members(b) if j != b]) for b in range(B)], np.float32)
    assert_variants(
        lambda x: (ops.leave_one_out_baseline(x, K), ops.leave_one_out_baseline(x, 1)), jnp.asarray(x0),
        expected=(want, np.zeros(B, np.float32)),
    )


rewards = st.lists(st.floats(-1e3, 1e3), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


@given(rewards, st.sampled_from([0, 1]))
def test_group_statistics_match_numpy(r, ddof):
    grouped = r.reshape(-1, K).astype(np.float64)
    np.testing.assert_allclose(ops.group_mean(jnp.asarray(r), K), np.repeat(grouped.mean(1), K), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        ops.group_std(jnp.asarray(r), K, ddof), np.repeat(grouped.std(1, ddof=ddof), K), rtol=1e-4, atol=1e-2
    )


@given(rewards)
def test_leave_one_out_baseline_is_mean_of_others(r):
    want = [np.mean(np.delete(r.reshape(-1, K)[i // K], i % K)) for i in range(B)]
    np.testing.assert_allclose(ops.leave_one_out_baseline(jnp.asarray(r), K), want, rtol=1e-5, atol=1e-2)
    assert np.all(ops.leave_one_out_baseline(jnp.asarray(r), 1) == 0)


@given(rewards)
def test_zscore_of_constant_group_is_zero_and_finite(r):
    r = np.repeat(r[::K], K)
    z = ops.group_zscore(jnp.asarray(r), K)
    assert np.all(z == 0)


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantage_on_trained_tokens(scale):
    rollout, _ = random_batch(1, B, T, K, masked_rows=(2,))
    r, mask = np.asarray(rollout.rewards, np.float64), np.asarray(rollout.loss_mask)
    want = np.zeros((B, T), np.float32)
    for b in range(B):
        group = [r[j] for j in _members(b)]
        adv = r[b] - np.mean(group)
        if scale:
            adv /= np.std(group, ddof=1) + 1e-6
        want[b] = np.where(mask[b], adv, 0.0)
    assert_variants(lambda ro: ops.group_advantage(ro, scale=scale), rollout, expected=want, rtol=1e-5, atol=1e-6)


def test_degenerate_groups_flags_all_equal_groups():
    want = np.asarray([len({float(x0[j]) for j in _members(b)}) == 1 for b in range(B)])
    assert_variants(lambda x: ops.degenerate_groups(x, K), jnp.asarray(x0), expected=want)
    assert list(want) == [False] * K + [True] * K


# --------------------------------------------------------------------------
# Masked group statistics
# --------------------------------------------------------------------------

x1 = np.asarray([0.5, -1.0, 2.0, 3.0, 1000.0, -4.0, 1001.0, 0.0], np.float32)
m1 = np.asarray([1, 0, 1, 1, 1, 0, 1, 0], bool)


def test_group_masked_mean_matches_loop():
    want = []
    for b in range(B):
        on = [x1[j] for j in _members(b) if m1[j]]
        want.append(np.mean(on) if on else 0.0)
    assert_variants(lambda x, m: ops.group_masked_mean(x, m, K), jnp.asarray(x1), jnp.asarray(m1),
                    expected=np.asarray(want, np.float32))
    empty = np.zeros(B, bool)
    assert_variants(lambda x, m: ops.group_masked_mean(x, m, K), jnp.asarray(x1), jnp.asarray(empty),
                    expected=np.zeros(B, np.float32))


def _naive_softmax(x, m):
    out = np.zeros(B)
    for b in range(B):
        if m[b]:
            top = max(x[j] for j in _members(b) if m[j])
            out[b] = np.exp(x[b] - top) / sum(np.exp(x[j] - top) for j in _members(b) if m[j])
    return out.astype(np.float32)


def test_group_masked_softmax_matches_loop_and_is_stable():
    assert_variants(lambda x, m: ops.group_masked_softmax(x, m, K), jnp.asarray(x1), jnp.asarray(m1),
                    expected=_naive_softmax(x1.astype(np.float64), m1))
    m = m1.copy()
    m[K:] = False  # a group with no masked row: all 0
    assert_variants(lambda x, m: ops.group_masked_softmax(x, m, K), jnp.asarray(x1), jnp.asarray(m),
                    expected=_naive_softmax(x1.astype(np.float64), m))


def test_group_masked_logmeanexp_value_and_gradient():
    x = x1.astype(np.float64)
    want = []
    for g in range(G):
        on = [x[j] for j in range(g * K, (g + 1) * K) if m1[j]]
        top = max(on)
        want.append(top + np.log(np.mean([np.exp(v - top) for v in on])))
    m = m1.copy()
    m[K:] = False
    want_empty = [want[0], 0.0]

    def fn(x, m):
        value = ops.group_masked_logmeanexp(x, m, K)
        grad = jax.grad(lambda y: jnp.sum(ops.group_masked_logmeanexp(y, m, K)))(x)
        return value, grad

    assert_variants(fn, jnp.asarray(x1), jnp.asarray(m1),
                    expected=(np.asarray(want, np.float32), _naive_softmax(x, m1)), rtol=1e-5)
    assert_variants(fn, jnp.asarray(x1), jnp.asarray(m),
                    expected=(np.asarray(want_empty, np.float32), _naive_softmax(x, m)), rtol=1e-5)


def test_group_value_entropy_matches_counter():
    keys = np.asarray([1, 1, 1, 1, 0, 1, 2, 1], np.int32)
    want = []
    for b in range(B):
        counts = collections.Counter(int(keys[j]) for j in _members(b))
        want.append(-sum(c / K * np.log2(c / K) for c in counts.values()))
    assert_variants(lambda k: ops.group_value_entropy(k, K), jnp.asarray(keys), expected=np.asarray(want, np.float32))
    assert want[0] == 0 and np.isclose(want[-1], 1.5)


# --------------------------------------------------------------------------
# Pairs of rows within a group
# --------------------------------------------------------------------------

def test_group_pair_differences_matches_loop():
    want = np.zeros((G, K, K), np.float32)
    for g, i, j in itertools.product(range(G), range(K), range(K)):
        want[g, i, j] = x1[g * K + i] - x1[g * K + j]
    assert_variants(lambda x: ops.group_pair_differences(x, K), jnp.asarray(x1), expected=want)


def test_group_pair_weight_counts_each_kept_pair_once():
    rollout, _ = random_batch(2, B, T, K)
    weight = np.asarray([1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 2.0, 0.0], np.float32)
    rollout = rollout.replace(sample_weight=jnp.asarray(weight))
    want = np.zeros((G, K, K), np.float32)
    for g in range(G):
        for i, j in itertools.combinations(range(K), 2):
            want[g, i, j] = min(weight[g * K + i], weight[g * K + j])
    assert_variants(ops.group_pair_weight, rollout, expected=want)
    with pytest.raises(ValueError, match="at least two rows"):
        ops.group_pair_weight(random_batch(0, 4, T, 1)[0])


@pytest.mark.parametrize("preference", ["bradley-terry", "hard"])
def test_group_win_rates_match_loop(preference):
    r = np.asarray([1.0, 0.0, 1.0, -2.0, 3.0, 1.0, 2.0, 0.5], np.float64)
    w = np.asarray([1, 1, 0, 1, 0, 0, 0, 0], np.float32)  # the second group has no kept row

    def prob(a, b):
        if preference == "bradley-terry":
            return 1.0 / (1.0 + np.exp(-(a - b)))
        return 1.0 if a > b else 0.5 if a == b else 0.0

    want = []
    for b in range(B):
        total = sum(w[j] for j in _members(b))
        want.append(sum(w[j] * prob(r[b], r[j]) for j in _members(b)) / total if total else 0.5)
    assert_variants(
        lambda r, w: ops.group_win_rates(r, w, K, preference), jnp.asarray(r, jnp.float32), jnp.asarray(w),
        expected=np.asarray(want, np.float32),
    )
    with pytest.raises(ValueError, match="unknown preference"):
        ops.group_win_rates(jnp.asarray(r, jnp.float32), jnp.asarray(w), K, "soft")


def test_group_ops_reject_token_level_inputs():
    with pytest.raises(AssertionError):
        ops.group_zscore(jnp.zeros((B, T)), K)
    with pytest.raises(AssertionError):
        ops.group_masked_mean(jnp.zeros(B), jnp.ones(B - K), K)
