"""SimPO's invariants (Meng et al. 2024, arXiv:2405.14734)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

SIMPO, DPO = get_algorithm("simpo"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)


@given(seeds, st.floats(0.05, 3.0))
def test_no_margin_no_length_normalisation_is_dpo_with_a_flat_reference(seed, beta):
    """γ = 0, summed log-likelihoods: SimPO is DPO with log π_ref ≡ 0."""
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = SIMPO.Config(beta=beta, gamma=0.0, length_normalise=False)
    loss, _, grads = loss_and_grad(SIMPO, cfg, stats, rollout)
    flat = rollout.replace(ref_logprobs=jnp.zeros_like(rollout.ref_logprobs))
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, flat)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.5, 5.0), st.floats(0.0, 3.0))
def test_closed_form_and_no_reference_dependence(seed, beta, gamma):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = SIMPO.Config(beta=beta, gamma=gamma)
    loss, _, grads = loss_and_grad(SIMPO, cfg, stats, rollout)
    other_ref = rollout.replace(ref_logprobs=rollout.ref_logprobs - 3.0)
    loss2, _, grads2 = loss_and_grad(SIMPO, cfg, stats, other_ref)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-6)
    mask = np.asarray(rollout.loss_mask)
    s = (np.where(mask, np.asarray(stats.logprobs), 0).sum(1) / np.maximum(mask.sum(1), 1)).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    z = beta * sign * (s[:, 0] - s[:, 1]) - gamma
    np.testing.assert_allclose(loss, np.sum((sign != 0) * np.logaddexp(0, -z)) / (B // 2), rtol=1e-5)


@given(seeds, st.floats(0.5, 5.0))
def test_reward_depends_on_the_mean_log_likelihood_only(seed, beta):
    """The reward is the mean log-likelihood: replacing every trained token's
    log-prob by its row's mean changes nothing."""
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = SIMPO.Config(beta=beta, gamma=0.0)
    mask = np.asarray(rollout.loss_mask)
    mean = np.where(mask, np.asarray(stats.logprobs), 0).sum(1, keepdims=True) / np.maximum(mask.sum(1, keepdims=True), 1)
    flat = stats.replace(logprobs=jnp.asarray(np.where(mask, mean, 0.0), jnp.float32))
    loss, _, _ = loss_and_grad(SIMPO, cfg, stats, rollout)
    loss2, _, _ = loss_and_grad(SIMPO, cfg, flat, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("label_smoothing", 2.0, "--label-smoothing must be <= 1.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SIMPO.Config(**{field: value})
