"""EXO-pair invariants (Ji et al. 2024, arXiv:2402.00856)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

EXO = get_algorithm("exo_pair")
B, T = 8, 10
seeds = st.integers(0, 2**16)
epsilons = st.floats(1e-4, 0.45)


def chosen_rows(rollout):
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    return np.where(r[:, 0] > r[:, 1], 0, 1) + 2 * np.arange(B // 2)


@given(seeds, st.floats(0.05, 2.0), epsilons)
def test_is_a_nonnegative_reverse_kl(seed, beta, eps):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(EXO, EXO.Config(beta=beta, epsilon=eps), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    c = chosen_rows(rollout)
    z = beta * (h[c] - h[c ^ 1])
    q = 1 / (1 + np.exp(-z))
    kl = q * (np.log(q) - np.log1p(-eps)) + (1 - q) * (np.log1p(-q) - np.log(eps))
    np.testing.assert_allclose(loss, kl.mean(), rtol=1e-4, atol=1e-6)
    assert float(loss) >= -1e-6


@given(seeds, st.floats(0.05, 2.0), epsilons)
def test_minimum_at_the_target_probability(seed, beta, eps):
    """Loss 0 and zero gradient where σ(βΔ) = 1 − ε, i.e. βΔ = log((1 − ε)/ε)."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    c = chosen_rows(rollout)
    logp = np.asarray(rollout.ref_logprobs).copy()
    logp[c, np.argmax(mask[c], axis=1)] += np.log((1 - eps) / eps) / beta
    stats = stats.replace(logprobs=jnp.asarray(logp))
    loss, _, grads = loss_and_grad(EXO, EXO.Config(beta=beta, epsilon=eps), stats, rollout)
    assert abs(float(loss)) < 1e-5
    assert np.max(np.abs(grads.logprobs)) < 1e-5


@pytest.mark.parametrize("field, value, message", [
    ("epsilon", 0.0, "--epsilon must be > 0.0"),
    ("epsilon", 1.0, "--epsilon must be < 1.0"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        EXO.Config(**{field: value})
