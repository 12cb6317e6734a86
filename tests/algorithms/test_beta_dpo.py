"""β-DPO's invariants (Wu et al. 2024, arXiv:2407.08639)."""

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

BDPO, DPO = get_algorithm("beta_dpo"), get_algorithm("dpo")
B, T = 16, 10
G = B // 2
seeds = st.integers(0, 2**16)


def np_gaps(rollout, logp):
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(logp) - np.asarray(rollout.ref_logprobs), 0).sum(1).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    return np.sign(r[:, 0] - r[:, 1]) * (h[:, 0] - h[:, 1])


@given(seeds, st.floats(0.02, 1.0))
def test_no_filter_and_no_adaptation_is_dpo(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = BDPO.Config(beta=beta, alpha=0.0, filter_ratio=0.0)
    loss, _, grads = loss_and_grad(BDPO, cfg, stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.0, 2.0))
def test_batch_beta_follows_the_running_gap_and_is_dpo_at_that_beta(seed, a):
    """ρ = 0: β_batch = β₀(1 + a(mean M − M₀)) with M₀ = 0.1·mean M after the first
    batch, M from the behaviour policy; the loss is DPO at β_batch."""
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = BDPO.Config(alpha=a, filter_ratio=0.0)
    adv, state = BDPO.advantages(rollout, cfg, BDPO.init_state(cfg))
    gaps = np_gaps(rollout, rollout.behaviour_logprobs)
    running = 0.1 * gaps.mean()
    expected_beta = max(cfg.beta * (1 + a * (gaps.mean() - running)), 1e-3)
    np.testing.assert_allclose(state["beta"], expected_beta, rtol=1e-4)
    np.testing.assert_allclose(state["gap_std"], 0.1 * gaps.std(ddof=1), rtol=1e-4)
    loss, _, grads = loss_and_grad(BDPO, cfg, stats, rollout, state=state, adv=adv)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=float(state["beta"])), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-8)


@given(seeds, st.sampled_from([0.2, 0.5, 0.75]))
def test_filter_keeps_k_pairs_and_averages_over_them(seed, rho):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = BDPO.Config(filter_ratio=rho)
    targets, state = BDPO.advantages(rollout, cfg, BDPO.init_state(cfg))
    keep = np.asarray(targets["row_targets"]).reshape(-1, 2)[:, 0] > 0
    assert keep.sum() == int(G * (1 - rho))
    # the logged advantage is the preference sign on the kept pairs' tokens
    sign = np.sign(np.asarray(rollout.rewards).reshape(-1, 2) @ np.array([1.0, -1.0]))
    expected = np.repeat(keep * sign, 2) * np.array([1.0, -1.0] * G)
    np.testing.assert_array_equal(targets["advantages"], np.where(rollout.loss_mask, expected[:, None], 0.0))
    loss, metrics, _ = loss_and_grad(BDPO, cfg, stats, rollout, state=state, adv=targets)
    z = float(state["beta"]) * np_gaps(rollout, stats.logprobs)
    np.testing.assert_allclose(loss, np.logaddexp(0, -z)[keep].mean(), rtol=1e-5)
    # the draw depends on the pairs, not their order: permuting pairs permutes the kept set
    order = np.random.default_rng(seed).permutation(G)
    rows = np.stack([2 * order, 2 * order + 1], 1).reshape(-1)
    targets_p, state_p = BDPO.advantages(rollout.select_rows(rows), cfg, BDPO.init_state(cfg))
    keep_p = np.asarray(targets_p["row_targets"]).reshape(-1, 2)[:, 0] > 0
    np.testing.assert_array_equal(keep_p, keep[order])
    np.testing.assert_allclose(state_p["beta"], state["beta"], rtol=1e-5)


def test_running_statistics_are_exponential_moving_averages():
    cfg = BDPO.Config(filter_ratio=0.0)
    state = BDPO.init_state(cfg)
    means, stds = [], []
    for seed in range(3):
        rollout, _ = random_batch(seed, B, T, 2)
        _, state = BDPO.advantages(rollout, cfg, state)
        gaps = np_gaps(rollout, rollout.behaviour_logprobs)
        means.append(gaps.mean())
        stds.append(gaps.std(ddof=1))
    mean = std = 0.0
    for m, s in zip(means, stds):
        mean, std = 0.9 * mean + 0.1 * m, 0.9 * std + 0.1 * s
    np.testing.assert_allclose(state["gap_mean"], mean, rtol=1e-4)
    np.testing.assert_allclose(state["gap_std"], std, rtol=1e-4)
    assert int(state["step"]) == 3
    jax.tree.map(lambda x: np.testing.assert_(np.all(np.isfinite(x))), state)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("filter_ratio", 1.0, "--filter-ratio must be < 1.0"),
    ("filter_ratio", -0.1, "--filter-ratio must be >= 0.0"),
    ("momentum", 1.5, "--momentum must be <= 1.0"),
    ("beta_min", 0.0, "--beta-min must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        BDPO.Config(**{field: value})
