"""NCA-pair invariants (Chen et al. 2024, arXiv:2402.05369)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import chosen_rejected_rows, loss_and_grad, random_batch

NCA = get_algorithm("nca_pair")
B, T = 8, 10
seeds = st.integers(0, 2**16)


@given(seeds, st.floats(0.05, 2.0))
def test_closed_form_on_individual_rewards(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(NCA, NCA.Config(beta=beta), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    c, l = chosen_rejected_rows(rollout)
    sp = lambda x: np.logaddexp(0, x)  # noqa: E731
    per = sp(-beta * h[c]) + 0.5 * sp(beta * h[c]) + 0.5 * sp(beta * h[l])
    np.testing.assert_allclose(loss, per.mean(), rtol=1e-5)
    # the rejected response is always pushed down
    assert np.all(np.asarray(grads.logprobs)[l][mask[l]] > 0)


@given(seeds, st.floats(0.05, 2.0))
def test_chosen_reward_settles_at_log_two(seed, beta):
    """−log σ(r) − ½ log σ(−r) is minimised at r = log 2: no gradient on the chosen
    tokens there, unlike DPO whose loss keeps pushing r_w up."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    c, _ = chosen_rejected_rows(rollout)
    logp = np.asarray(rollout.ref_logprobs).copy()
    logp[c, np.argmax(mask[c], axis=1)] += np.log(2.0) / beta
    stats = stats.replace(logprobs=jnp.asarray(logp))
    _, _, grads = loss_and_grad(NCA, NCA.Config(beta=beta), stats, rollout)
    assert np.max(np.abs(np.asarray(grads.logprobs)[c])) < 1e-6


@given(seeds, st.floats(0.05, 2.0))
def test_not_a_function_of_the_margin_alone(seed, beta):
    """Raising both responses' log-likelihoods by the same amount changes the loss at rate
    β(−1 + 3/2·σ(r_w) + 1/2·σ(r_l)) per pair (0 for any margin-only loss such as DPO)."""
    rollout, stats = random_batch(seed, B, T, 2)
    _, _, grads = loss_and_grad(NCA, NCA.Config(beta=beta), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = beta * np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    c, l = chosen_rejected_rows(rollout)
    g = np.asarray(grads.logprobs)
    common = g[c, np.argmax(mask[c], axis=1)] + g[l, np.argmax(mask[l], axis=1)]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = beta * (-1 + 1.5 * sig(h[c]) + 0.5 * sig(h[l])) / (B // 2)
    np.testing.assert_allclose(common, expected, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        NCA.Config(**{field: value})
