"""SPPO-hard invariants (Wu et al. 2024, arXiv:2405.00675)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import chosen_rejected_rows, loss_and_grad, random_batch

SPPO = get_algorithm("sppo_hard")
B, T = 8, 10
seeds = st.integers(0, 2**16)


@given(seeds, st.floats(0.05, 2.0))
def test_closed_form(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(SPPO, SPPO.Config(beta=beta), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    c, l = chosen_rejected_rows(rollout)
    expected = (h[c] - 0.5 / beta) ** 2 + (h[l] + 0.5 / beta) ** 2
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


@given(seeds, st.floats(0.05, 2.0))
def test_minimiser_puts_chosen_and_rejected_log_ratios_at_plus_minus_half_eta(seed, beta):
    """The hard win rates 1 and 0 give targets ±η/2 = ±1/(2β) for each response."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    c, l = chosen_rejected_rows(rollout)
    logp = np.asarray(rollout.ref_logprobs).copy()
    logp[c, np.argmax(mask[c], axis=1)] += 0.5 / beta
    logp[l, np.argmax(mask[l], axis=1)] -= 0.5 / beta
    stats = stats.replace(logprobs=jnp.asarray(logp))
    loss, _, grads = loss_and_grad(SPPO, SPPO.Config(beta=beta), stats, rollout)
    assert abs(float(loss)) < 1e-6 * (1 + 1 / beta**2)
    assert np.max(np.abs(grads.logprobs)) < 1e-5 * (1 + 1 / beta)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SPPO.Config(**{field: value})
