"""IPO's invariants (Azar et al. 2023, arXiv:2310.12036)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

IPO = get_algorithm("ipo")
B, T = 8, 10
seeds = st.integers(0, 2**16)
betas = st.floats(0.05, 2.0)


def np_margin(rollout, logp, mean):
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(logp) - np.asarray(rollout.ref_logprobs), 0.0).sum(1)
    if mean:
        h = h / np.maximum(mask.sum(1), 1)
    r, h = np.asarray(rollout.rewards).reshape(-1, 2), h.reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    return sign * (h[:, 0] - h[:, 1]), sign != 0


@given(seeds, betas, st.booleans())
def test_loss_is_the_squared_distance_to_the_target_margin(seed, beta, normalise):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(IPO, IPO.Config(beta=beta, length_normalise=normalise), stats, rollout)
    delta, decided = np_margin(rollout, stats.logprobs, normalise)
    expected = np.sum(decided * (delta - 1 / (2 * beta)) ** 2) / (B // 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@given(seeds, betas, st.booleans())
def test_minimiser_puts_the_margin_at_one_over_two_beta(seed, beta, normalise):
    """A policy whose margin is exactly 1/(2β) on every pair is a stationary point with loss 0."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    lengths = np.maximum(mask.sum(1), 1)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    chosen = np.repeat(r[:, 0] >= r[:, 1], 2) == np.tile([True, False], B // 2)
    target = 1 / (2 * beta)
    per_token = np.where(chosen, target / (1.0 if normalise else lengths), 0.0)[:, None]
    logp = np.asarray(rollout.ref_logprobs) + np.where(mask, per_token, 0.0)
    stats = stats.replace(logprobs=jnp.asarray(logp, jnp.float32))
    # keep only pairs whose rows both have trained tokens (an empty row cannot carry the margin)
    both = np.repeat(mask.any(1).reshape(-1, 2).all(1), 2)
    rollout = rollout.replace(sample_weight=jnp.asarray(both, jnp.float32))
    loss, _, grads = loss_and_grad(IPO, IPO.Config(beta=beta, length_normalise=normalise), stats, rollout)
    assert abs(float(loss)) < 1e-6 * (1 + target**2)
    assert np.max(np.abs(grads.logprobs)) < 1e-5 * (1 + target)


@given(seeds, st.floats(-3.0, 3.0))
def test_policy_enters_only_through_the_margin(seed, shift):
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    moved = stats.replace(logprobs=stats.logprobs + jnp.where(mask, shift, 0.0))
    cfg = IPO.Config(length_normalise=True)
    loss, _, grads = loss_and_grad(IPO, cfg, stats, rollout)
    loss2, _, grads2 = loss_and_grad(IPO, cfg, moved, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("beta", -0.2, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        IPO.Config(**{field: value})
