"""MADPO's invariants (Rho 2025, arXiv:2510.05342)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import madpo
from rlzoo.testing import loss_and_grad, random_batch

MADPO, DPO = get_algorithm("madpo"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def official_weight(h, c_max=2.0, c_min=0.5, lam=1.0, tau=2.0):
    """The official MADPOLoss weight for the chosen label, written out in numpy."""
    c = c_min + (c_max - c_min) / (1 + (c_max - 1) / (1 - c_min) * np.exp(lam * (np.abs(h) - tau)))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return np.where(h > -tau, sig(c * h) / sig(h), 1.0)


@given(seeds, st.floats(0.02, 1.0))
def test_no_amplification_is_dpo(seed, beta):
    """c_max = 1 makes c ≡ 1 and every weight 1."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(MADPO, MADPO.Config(beta=beta, c_max=1.0), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(st.floats(-20.0, 20.0), st.floats(1.0, 4.0), st.floats(0.1, 0.95), st.floats(0.5, 3.0))
def test_weight_amplifies_hard_and_damps_easy_pairs(h, c_max, c_min, tau):
    cfg = MADPO.Config(c_max=c_max, c_min=c_min, tau=tau)
    w = float(madpo.pair_weight(np.float32(h), cfg))
    np.testing.assert_allclose(w, official_weight(h, c_max, c_min, 1.0, tau), rtol=1e-4)
    assert w > 0
    if 1e-3 < h < tau - 1e-3 and c_max > 1.01:
        assert w > 1
    if h > tau + 1e-3:
        assert w <= 1 + 1e-6
    if h <= -tau:
        assert w == 1.0
    for anchor in (0.0, tau):
        np.testing.assert_allclose(float(madpo.pair_weight(np.float32(anchor), cfg)), 1.0, rtol=1e-5)


@given(seeds, st.booleans())
def test_loss_is_the_reward_margin_weighted_dpo_loss(seed, from_component):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = MADPO.Config(margin_component=1 if from_component else None)
    loss, _, _ = loss_and_grad(MADPO, cfg, stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    source = np.asarray(rollout.reward_components)[:, 1] if from_component else np.asarray(rollout.rewards)
    margin = sign * (source.reshape(-1, 2)[:, 0] - source.reshape(-1, 2)[:, 1])
    z = 0.1 * sign * (h[:, 0] - h[:, 1])
    expected = np.sum(official_weight(margin) * np.logaddexp(0, -z)) / (B // 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("c_max", 0.9, "--c-max must be >= 1.0"),
    ("c_min", 1.0, "--c-min must be < 1.0"),
    ("tau", -1.0, "--tau must be >= 0.0"),
    ("margin_component", -1, "--margin-component must be >= 0"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MADPO.Config(**{field: value})
