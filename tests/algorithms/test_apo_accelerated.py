"""Accelerated Preference Optimization's invariants (He et al. 2024, arXiv:2410.06293)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import apo_accelerated as apo
from rlzoo.testing import loss_and_grad, random_batch

APO, DPO = get_algorithm("apo_accelerated"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def with_iterates(seed, alpha):
    """A batch whose reference is extrapolated from two iterates (latest = the
    batch's ref, previous = a perturbation of it)."""
    rollout, stats = random_batch(seed, B, T, 2)
    rng = np.random.default_rng(seed)
    latest = np.asarray(rollout.ref_logprobs)
    previous = np.where(np.asarray(rollout.loss_mask), latest + rng.normal(0, 0.3, latest.shape), 0.0)
    ref = apo.extrapolated_logprobs(jnp.asarray(latest), jnp.asarray(previous, jnp.float32), alpha)
    return rollout.replace(ref_logprobs=ref), stats, latest, previous


@given(seeds, st.floats(0.02, 1.0))
def test_zero_momentum_is_iterative_dpo(seed, beta):
    rollout, stats, latest, _ = with_iterates(seed, 0.0)
    np.testing.assert_array_equal(rollout.ref_logprobs, latest)
    loss, _, grads = loss_and_grad(APO, APO.Config(beta=beta, alpha=0.0), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-6, atol=1e-9)


@given(seeds, st.floats(0.0, 1.0))
def test_reference_margin_is_the_nesterov_extrapolation(seed, alpha):
    """Margin of the extrapolated reference = (1 + α) m(π̂_{t+1}) − α m(π̂_t)."""
    rollout, stats, latest, previous = with_iterates(seed, alpha)
    loss, _, _ = loss_and_grad(APO, APO.Config(alpha=alpha), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    total = lambda x: np.where(mask, x, 0).sum(1).reshape(-1, 2)  # noqa: E731
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    margin = lambda x: sign * (total(x)[:, 0] - total(x)[:, 1])  # noqa: E731
    ref_margin = (1 + alpha) * margin(latest) - alpha * margin(previous)
    z = 0.1 * (margin(np.asarray(stats.logprobs)) - ref_margin)
    np.testing.assert_allclose(loss, np.sum(np.logaddexp(0, -z)) / (B // 2), rtol=1e-5)


@given(seeds, st.floats(0.0, 1.0), st.floats(-20.0, 20.0))
def test_normaliser_of_the_extrapolated_reference_cancels(seed, alpha, log_z):
    """log Z(x) is shared by both responses of a prompt: adding it to both changes nothing."""
    rollout, stats, _, _ = with_iterates(seed, alpha)
    mask = np.asarray(rollout.loss_mask)
    first = np.argmax(mask, axis=1)
    shift = np.zeros(mask.shape, np.float32)
    shift[np.arange(B), first] = log_z
    shifted = rollout.replace(ref_logprobs=rollout.ref_logprobs + jnp.asarray(shift))
    cfg = APO.Config(alpha=alpha)
    loss, _, grads = loss_and_grad(APO, cfg, stats, rollout)
    loss2, _, grads2 = loss_and_grad(APO, cfg, stats, shifted)
    np.testing.assert_allclose(loss, loss2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-7)


@given(seeds, st.floats(0.0, 1.0))
def test_registry_hook_is_the_extrapolation(seed, alpha):
    """The trainer's reference hook: (1 + α) latest − α previous, and the latest itself when they agree."""
    rng = np.random.default_rng(seed)
    latest, previous = rng.normal(size=(2, B, T)).astype(np.float32)
    cfg = APO.Config(alpha=alpha)
    np.testing.assert_allclose(APO.reference_logprobs(latest, previous, cfg), (1 + alpha) * latest - alpha * previous, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(APO.reference_logprobs(latest, latest, cfg), latest, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("alpha", -0.1, "--alpha must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        APO.Config(**{field: value})
