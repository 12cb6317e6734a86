"""rDPO's invariants (Chowdhury et al. 2024, arXiv:2403.00409)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

RDPO, DPO = get_algorithm("rdpo"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)
betas = st.floats(0.02, 1.0)


@given(seeds, betas)
def test_zero_flip_rate_is_dpo(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(RDPO, RDPO.Config(beta=beta, label_flip_rate=0.0), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, betas, st.floats(0.0, 0.45))
def test_expected_loss_over_label_flips_is_the_clean_dpo_loss(seed, beta, eps):
    """E_flip[rDPO(observed label)] = DPO(clean label), for the loss and the gradient:
    the observed pair is the clean one with probability 1 − ε and flipped with ε."""
    rollout, stats = random_batch(seed, B, T, 2)
    flipped = rollout.replace(rewards=-rollout.rewards)
    cfg = RDPO.Config(beta=beta, label_flip_rate=eps)
    loss_clean, _, g_clean = loss_and_grad(RDPO, cfg, stats, rollout)
    loss_flip, _, g_flip = loss_and_grad(RDPO, cfg, stats, flipped)
    loss_dpo, _, g_dpo = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose((1 - eps) * loss_clean + eps * loss_flip, loss_dpo, rtol=1e-4, atol=1e-5)
    mixed = (1 - eps) * np.asarray(g_clean.logprobs) + eps * np.asarray(g_flip.logprobs)
    np.testing.assert_allclose(mixed, g_dpo.logprobs, rtol=1e-4, atol=1e-6)


@given(seeds, st.floats(0.0, 0.45))
def test_closed_form(seed, eps):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(RDPO, RDPO.Config(label_flip_rate=eps), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    z = 0.1 * sign * (h[:, 0] - h[:, 1])
    per_pair = ((1 - eps) * np.logaddexp(0, -z) - eps * np.logaddexp(0, z)) / (1 - 2 * eps)
    np.testing.assert_allclose(loss, np.sum((sign != 0) * per_pair) / (B // 2), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("label_flip_rate", 0.5, "--label-flip-rate must be < 0.5"),
    ("label_flip_rate", -0.1, "--label-flip-rate must be >= 0.0"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        RDPO.Config(**{field: value})
