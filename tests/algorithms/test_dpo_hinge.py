"""DPO-hinge (SLiC / RSO hinge-norm) invariants."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

HINGE = get_algorithm("dpo_hinge")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def np_margin(rollout, logp):
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(logp) - np.asarray(rollout.ref_logprobs), 0).sum(1).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    return sign * (h[:, 0] - h[:, 1]), sign


@given(seeds, st.floats(0.05, 2.0))
def test_closed_form_and_swap(seed, beta):
    """L(Δ) = max(0, 1 − βΔ); swapping chosen and rejected gives max(0, 1 + βΔ)."""
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = HINGE.Config(beta=beta)
    delta, _ = np_margin(rollout, stats.logprobs)
    loss, _, _ = loss_and_grad(HINGE, cfg, stats, rollout)
    np.testing.assert_allclose(loss, np.maximum(0, 1 - beta * delta).mean(), rtol=1e-5, atol=1e-7)
    swapped, _, _ = loss_and_grad(HINGE, cfg, stats, rollout.replace(rewards=-rollout.rewards))
    np.testing.assert_allclose(swapped, np.maximum(0, 1 + beta * delta).mean(), rtol=1e-5, atol=1e-7)


@given(seeds, st.floats(0.05, 2.0), st.floats(-3.0, 3.0))
def test_satisfied_pairs_give_no_gradient_and_others_a_constant_slope(seed, beta, offset):
    """Set each pair's margin to (1 + offset)/β: pairs past the hinge (offset > 0)
    contribute nothing, the others −β/N_pairs per chosen token."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    _, sign = np_margin(rollout, stats.logprobs)
    chosen_row = np.where(sign > 0, 0, 1) + 2 * np.arange(B // 2)
    logp = np.asarray(rollout.ref_logprobs).copy()
    first = np.argmax(mask[chosen_row], axis=1)
    logp[chosen_row, first] += (1 + offset) / beta
    stats = stats.replace(logprobs=jnp.asarray(logp))
    loss, _, grads = loss_and_grad(HINGE, HINGE.Config(beta=beta), stats, rollout)
    g = np.asarray(grads.logprobs)
    if offset > 1e-3:
        assert float(loss) == 0 and np.all(g == 0)
    elif offset < -1e-3:
        np.testing.assert_allclose(g[chosen_row][mask[chosen_row]], -beta / (B // 2), rtol=1e-5)
        np.testing.assert_allclose(loss, -offset, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        HINGE.Config(**{field: value})
