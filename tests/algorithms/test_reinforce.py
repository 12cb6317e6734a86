"""REINFORCE with a group-mean baseline (Williams 1992)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

REINFORCE = get_algorithm("reinforce")
B, T, K = 8, 10, 4


@given(st.integers(0, 2**16))
def test_gradient_is_score_function_times_advantage(seed):
    """∂L/∂log π(y_{i,t}) = −(R_i − mean_g R)/N on every trained token (token sum per response)."""
    rollout, stats = random_batch(seed, B, T, K)
    _, _, grads = loss_and_grad(REINFORCE, REINFORCE.Config(), stats, rollout)
    r = np.asarray(rollout.rewards)
    centred = r - np.repeat(r.reshape(-1, K).mean(1), K)
    want = np.where(rollout.loss_mask, -centred[:, None] / B, 0.0)
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-5, atol=1e-7)


@given(st.integers(0, 2**16), st.floats(-100, 100))
def test_group_baseline_removes_a_constant_reward(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    moved = rollout.replace(rewards=rollout.rewards + shift)
    _, _, g1 = loss_and_grad(REINFORCE, REINFORCE.Config(), stats, rollout)
    _, _, g2 = loss_and_grad(REINFORCE, REINFORCE.Config(), stats, moved)
    np.testing.assert_allclose(g1.logprobs, g2.logprobs, rtol=1e-3, atol=1e-5)


def test_without_baseline_gradient_scales_with_raw_reward():
    rollout, stats = random_batch(0, B, T, K)
    rollout = rollout.replace(rewards=jnp.ones(B))
    _, _, grads = loss_and_grad(REINFORCE, REINFORCE.Config(baseline="none"), stats, rollout)
    np.testing.assert_allclose(grads.logprobs, np.where(rollout.loss_mask, -1.0 / B, 0.0), rtol=1e-6)
    _, _, grads = loss_and_grad(REINFORCE, REINFORCE.Config(), stats, rollout)
    assert np.all(np.asarray(grads.logprobs) == 0)


def test_config_defaults_and_rejected_values():
    cfg = REINFORCE.Config()
    assert (cfg.baseline, cfg.aggregation, cfg.kl_coef, cfg.entropy_coef) == ("group-mean", "seq-mean-token-sum", 0.0, 0.0)
    assert REINFORCE.estimator_fields == ("baseline",)
    with pytest.raises(ValueError, match="baseline must be one of"):
        REINFORCE.Config(baseline="leave-one-out")
    with pytest.raises(ValueError, match="kl-coef must be >= 0"):
        REINFORCE.Config(kl_coef=-1.0)
