"""D³S's invariants (Wang et al. 2025, arXiv:2509.22115; selection rules [inferred])."""

import dataclasses
import itertools
import math
import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.d3s import keep_ratios, max_variance_rows
from rlzoo.testing import loss_and_grad, random_batch

D3S = get_algorithm("d3s")
K, B, T = 4, 8, 10


@given(st.integers(0, 2**16))
def test_keeping_everything_is_grpo(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = D3S.Config(sample_keep_start=1.0, token_keep_start=1.0)
    loss, _, grads = loss_and_grad(D3S, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    base_loss, _, base = loss_and_grad(grpo, grpo.Config(kl_coef=0.0), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)


@given(
    st.lists(st.floats(-10, 10, width=32), min_size=18, max_size=18, unique=True),
    st.integers(1, 6),
)
def test_kept_rows_have_the_largest_advantage_variance(values, m):
    """Per group of 6, the kept m rows' variance equals the maximum over all C(6, m) subsets."""
    k = 6
    adv = jnp.asarray(values, jnp.float32)
    keep = np.asarray(max_variance_rows(adv, k, m / k)).reshape(-1, k)
    groups = np.asarray(values, np.float64).reshape(-1, k)
    for g in range(groups.shape[0]):
        assert keep[g].sum() == m
        best = max(np.var(groups[g, list(c)]) for c in itertools.combinations(range(k), m))
        np.testing.assert_allclose(np.var(groups[g][keep[g]]), best, rtol=1e-5, atol=1e-6)


@given(st.integers(0, 2**16), st.floats(0.1, 1.0))
def test_token_level_keeps_the_top_advantage_times_entropy(seed, ratio):
    """Among the kept rows' tokens exactly ⌈ρ_t N⌉ survive, those with the
    largest |Â| · H (sample level switched off)."""
    rollout, _ = random_batch(seed, B, T, K)
    cfg = D3S.Config(sample_keep_start=1.0, token_keep_start=ratio, schedule_steps=100)
    adv, state = D3S.advantages(rollout, cfg, D3S.init_state(cfg))
    full, _ = get_algorithm("grpo").advantages(rollout, get_algorithm("grpo").Config(), ())
    mask = np.asarray(rollout.loss_mask)
    kept = mask & (np.asarray(adv) != 0)
    score = np.abs(np.asarray(full)) * np.asarray(rollout.sample_entropy)
    n_keep = math.ceil(ratio * mask.sum() - 1e-6)
    assert kept.sum() == n_keep
    threshold = np.sort(score[mask])[::-1][n_keep - 1]
    assert np.all(score[kept] >= threshold - 1e-6)
    assert np.all(score[mask & ~kept] <= threshold + 1e-6)
    np.testing.assert_array_equal(np.asarray(adv)[kept], np.asarray(full)[kept])
    assert int(state) == 1


@given(st.integers(0, 500), st.integers(0, 500))
def test_schedule_relaxes_monotonically(a, b):
    cfg = D3S.Config(schedule_steps=50)
    lo, hi = sorted((a, b))
    s_lo, t_lo = keep_ratios(cfg, jnp.int32(lo))
    s_hi, t_hi = keep_ratios(cfg, jnp.int32(hi))
    assert s_lo <= s_hi + 1e-7 and t_lo <= t_hi + 1e-7
    if hi >= 50:
        assert float(s_hi) == cfg.sample_keep_end and float(t_hi) == cfg.token_keep_end
    assert float(keep_ratios(cfg, jnp.int32(0))[0]) == cfg.sample_keep_start


def test_state_counts_batches_and_relaxes_selection():
    rollout, _ = random_batch(4, B, T, K)
    cfg = D3S.Config(schedule_steps=3)
    state = D3S.init_state(cfg)
    kept = []
    for _ in range(4):
        adv, state = D3S.advantages(rollout, cfg, state)
        kept.append(int(np.sum(np.asarray(adv) != 0)))
    assert int(state) == 4
    assert kept == sorted(kept) and kept[0] < kept[-1]


def test_estimator_fields_are_the_selection_settings():
    """D³S's down-sampling lives in its advantages: paired with another loss, the
    selection settings and the sampling-time entropy it reads come along."""
    paired = get_algorithm("grpo", advantage="d3s")
    names = {f.name for f in dataclasses.fields(paired.Config)}
    assert set(D3S.estimator_fields) <= names and "clip_eps_low" in names
    assert "sample_entropy" in paired.required(paired.Config())


@pytest.mark.parametrize("overrides, message", [
    ({"sample_keep_start": 0.0}, "d3s: --sample-keep-start must be > 0.0; got 0.0"),
    ({"token_keep_end": 1.5}, "d3s: --token-keep-end must be <= 1.0"),
    ({"schedule_steps": -1}, "d3s: --schedule-steps must be >= 0"),
    ({"clip_eps_low": -1.0}, "d3s: --clip-eps-low must be >= 0.0"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        D3S.Config(**overrides)
