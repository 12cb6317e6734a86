"""OPMD's invariants (Kimi k1.5 arXiv:2501.12599; Yao et al. 2025, arXiv:2509.24203)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

OPMD = get_algorithm("opmd")
K, B, T = 4, 8, 10


@given(st.integers(0, 2**16))
def test_zero_tau_is_group_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    loss, _, grads = loss_and_grad(OPMD, OPMD.Config(tau=0.0), stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_loss, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)


@given(st.integers(0, 2**16), st.floats(0.0, 2.0))
def test_gradient_is_reinforce_minus_proximal_pull(seed, tau):
    """∇ℓ_t = −w_t (Â_t − 2τ (log π_θ − log π_old))."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = OPMD.Config(tau=tau)
    adv, _ = OPMD.advantages(rollout, cfg, ())
    _, _, grads = loss_and_grad(OPMD, cfg, stats, rollout)
    delta = np.where(rollout.loss_mask, np.asarray(stats.logprobs) - np.asarray(rollout.behaviour_logprobs), 0)
    want = np.asarray(reinforce_gradient(rollout, np.asarray(adv) - 2 * tau * delta, "token-mean"))
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-4, atol=1e-8)


@given(st.integers(0, 2**16))
def test_first_step_of_a_batch_is_reinforce(seed):
    """At θ = θ_old the penalty and its gradient vanish."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = OPMD.Config(tau=5.0)
    adv, _ = OPMD.advantages(rollout, cfg, ())
    _, metrics, grads = loss_and_grad(OPMD, cfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-8)
    assert metrics["proximal_penalty"] == 0


@given(st.integers(0, 2**16), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_penalty_is_non_negative_and_grows_with_tau(seed, t1, t2):
    rollout, stats = random_batch(seed, B, T, K)
    lo, hi = sorted((t1, t2))
    l0, _, _ = loss_and_grad(OPMD, OPMD.Config(tau=0.0), stats, rollout)
    l1, _, _ = loss_and_grad(OPMD, OPMD.Config(tau=lo), stats, rollout)
    l2, _, _ = loss_and_grad(OPMD, OPMD.Config(tau=hi), stats, rollout)
    assert l0 <= l1 + 1e-6 and l1 <= l2 + 1e-6


def test_config_defaults_and_rejected_values():
    cfg = OPMD.Config()
    assert (cfg.tau, cfg.scale_rewards, cfg.aggregation, cfg.kl_coef) == (0.1, False, "token-mean", 0.0)
    assert OPMD.estimator_fields == ("scale_rewards", "std_eps")
    with pytest.raises(ValueError, match="tau must be >= 0"):
        OPMD.Config(tau=-0.1)
    with pytest.raises(ValueError, match="entropy-coef must be finite"):
        OPMD.Config(entropy_coef=float("inf"))
