"""AsymRE's invariants (Arnal et al. 2025, arXiv:2506.20520)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch, reinforce_gradient

ASYMRE = get_algorithm("asymre")
K, B, T = 4, 8, 10
rewards_strategy = st.lists(st.floats(-50, 50, width=32), min_size=B, max_size=B).map(
    lambda xs: jnp.asarray(xs, jnp.float32)
)


def per_row(rollout, cfg):
    adv, _ = ASYMRE.advantages(rollout, cfg, ())
    mask = np.asarray(rollout.loss_mask)
    return np.asarray(adv).sum(1) / np.maximum(mask.sum(1), 1)


@given(st.integers(0, 2**16))
def test_zero_delta_is_group_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    loss, _, grads = loss_and_grad(ASYMRE, ASYMRE.Config(delta=0.0), stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_loss, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)


@given(rewards_strategy, st.floats(-1.0, 1.0))
def test_baseline_sits_delta_below_the_group_mean(rewards, delta):
    """Â_i = R_i − (mean_g R − δ): each group's mean advantage is δ."""
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(rewards=rewards)
    got = per_row(rollout, ASYMRE.Config(delta=delta))
    r = np.asarray(rewards, np.float64).reshape(-1, K)
    want = (r - r.mean(1, keepdims=True) + delta).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@given(rewards_strategy, st.floats(-50, 50))
def test_advantage_invariant_to_a_group_shift(rewards, shift):
    rollout, _ = random_batch(0, B, T, K)
    a = per_row(rollout.replace(rewards=rewards), ASYMRE.Config())
    b = per_row(rollout.replace(rewards=rewards + shift), ASYMRE.Config())
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16), st.floats(0.0, 1.0))
def test_gradient_is_reinforce_plus_forward_kl_pull(seed, delta):
    """∇ℓ = REINFORCE's gradient plus the gradient of −δ log π_θ(y_t) (token-mean)."""
    rollout, stats = random_batch(seed, B, T, K)
    _, _, grads = loss_and_grad(ASYMRE, ASYMRE.Config(delta=delta), stats, rollout)
    reinforce = get_algorithm("reinforce")
    _, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="token-mean"), stats, rollout)
    pull = reinforce_gradient(rollout, jnp.where(rollout.loss_mask, delta, 0.0), "token-mean")
    np.testing.assert_allclose(grads.logprobs, np.asarray(base.logprobs) + np.asarray(pull), rtol=1e-4, atol=1e-8)


def test_config_defaults_needs_and_rejected_values():
    cfg = ASYMRE.Config()
    assert (cfg.delta, cfg.aggregation, cfg.kl_coef) == (0.1, "token-mean", 0.0)
    assert ASYMRE.required(cfg) & {"ref_logprobs", "entropy"} == set()
    assert ASYMRE.required(ASYMRE.Config(kl_coef=0.1, entropy_coef=0.01)) >= {"ref_logprobs", "entropy"}
    assert ASYMRE.estimator_fields == ("delta",)
    with pytest.raises(ValueError, match="kl-coef must be >= 0"):
        ASYMRE.Config(kl_coef=-0.1)
    with pytest.raises(ValueError, match="delta must be finite"):
        ASYMRE.Config(delta=float("nan"))
