"""RPO's invariants (Liu et al. 2024, arXiv:2405.16436)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

RPO, DPO = get_algorithm("rpo"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)
betas = st.floats(0.005, 1.0)


def chosen_rows(rollout):
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    decided = np.repeat(r[:, 0] != r[:, 1], 2)
    first = np.repeat(r[:, 0] > r[:, 1], 2)
    return decided & (first == np.tile([True, False], B // 2))


@given(seeds, betas, st.sampled_from(["sum", "mean"]))
def test_zero_eta_is_dpo(seed, beta, norm):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(RPO, RPO.Config(beta=beta, eta=0.0, sft_normalisation=norm), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, betas, st.floats(0.0, 5.0), st.sampled_from(["sum", "mean"]))
def test_sft_part_is_minus_eta_beta_grad_log_likelihood_of_the_chosen(seed, beta, eta, norm):
    """∇L_RPO − ∇L_DPO = −ηβ ∇log π(y_w) (per token: −ηβ/N_pairs, or /|y_w| for the mean)."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(RPO, RPO.Config(beta=beta, eta=eta, sft_normalisation=norm), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    lengths = np.maximum(mask.sum(1, keepdims=True), 1) if norm == "mean" else 1.0
    chosen = chosen_rows(rollout)[:, None] & mask
    expected = np.where(chosen, -eta * beta / lengths / (B // 2), 0.0)
    np.testing.assert_allclose(np.asarray(grads.logprobs) - grads2.logprobs, expected, rtol=1e-4, atol=1e-7)
    nll = -np.where(mask, np.asarray(stats.logprobs), 0).sum(1, keepdims=True) / lengths
    np.testing.assert_allclose(loss - loss2, eta * beta * np.sum(nll[chosen_rows(rollout)]) / (B // 2), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("eta", -1.0, "--eta must be >= 0.0"),
    ("sft_normalisation", "max", "--sft-normalisation must be one of"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        RPO.Config(**{field: value})
