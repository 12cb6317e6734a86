"""DPPO-Binary-KL's invariants (Qi et al. 2026, arXiv:2602.04879; verl loss_mode=dppo_kl)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.dppo_kl import binary_kl
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

DPPO = get_algorithm("dppo_kl")
K, B, T = 4, 8, 10
probs = st.floats(1e-4, 1 - 1e-4)


def numpy_binary_kl(p_old, p):
    return p_old * np.log(p_old / p) + (1 - p_old) * np.log((1 - p_old) / (1 - p))


@given(probs, probs)
def test_binary_kl_is_the_bernoulli_kl(p_old, p):
    got = float(binary_kl(jnp.log(jnp.float32(p_old)), jnp.log(jnp.float32(p))))
    want = numpy_binary_kl(p_old, p)
    assert got >= -1e-6
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-5)
    assert abs(float(binary_kl(jnp.log(jnp.float32(p)), jnp.log(jnp.float32(p))))) < 1e-5


@given(st.integers(0, 2**16), st.floats(0.005, 0.2))
def test_gradient_is_is_pg_inside_the_binary_kl_region(seed, delta):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = DPPO.Config(delta_low=delta, delta_high=delta)
    adv, _ = DPPO.advantages(rollout, cfg, ())
    _, _, grads = loss_and_grad(DPPO, cfg, stats, rollout)
    logp = np.asarray(stats.logprobs, np.float64)
    old = np.asarray(rollout.behaviour_logprobs, np.float64)
    p, p_old = np.exp(logp), np.exp(old)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = numpy_binary_kl(p_old, np.clip(p, 1e-12, 1 - 1e-12))
    a = np.asarray(adv)
    valid = np.where(a > 0, (kl <= delta) | (p <= p_old), (kl <= delta) | (p >= p_old))
    mask = np.asarray(rollout.loss_mask)
    # Tokens within float32 rounding of the boundary are not compared.
    clear = ~mask | (np.abs(kl - delta) > 1e-4 * (1 + delta))
    want = np.asarray(reinforce_gradient(rollout, adv, cfg.aggregation)) * np.exp(logp - old) * valid
    np.testing.assert_allclose(np.asarray(grads.logprobs)[clear], want[clear], rtol=2e-4, atol=1e-7)


@given(st.integers(0, 2**16))
def test_on_policy_equals_reinforce_loss_and_gradient(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    loss, metrics, grads = loss_and_grad(DPPO, DPPO.Config(), stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_loss, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="seq-mean-token-sum-norm"), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)
    assert metrics["clip_frac"] == 0 and abs(metrics["binary_kl"]) < 1e-6


def test_only_moves_in_the_advantage_direction_are_blocked():
    rollout, stats = random_batch(5, B, T, K)
    cfg = DPPO.Config(delta_low=1e-6, delta_high=1e-6)
    adv = jnp.where(rollout.loss_mask, -1.0, 0.0)
    mask = np.asarray(rollout.loss_mask)
    down = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs + 0.5, 0.0))
    up = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs - 0.5, 0.0))
    _, _, g_down = loss_and_grad(DPPO, cfg, stats, down, adv=adv)
    _, _, g_up = loss_and_grad(DPPO, cfg, stats, up, adv=adv)
    # Â < 0 pushes the probability down: a token already pushed down is blocked,
    # one whose probability rose keeps its (positive) gradient.
    assert np.all(np.asarray(g_down.logprobs)[mask] == 0)
    assert np.all(np.asarray(g_up.logprobs)[mask] > 0)


@pytest.mark.parametrize("overrides, message", [
    ({"delta_low": -0.01}, 'dppo_kl: --delta-low must be >= 0.0; got -0.01'),
    ({"is_cap": 0.0}, 'dppo_kl: --is-cap must be > 0.0'),
    ({"norm_len": 0}, 'dppo_kl: --norm-len must be >= 1'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DPPO.Config(**overrides)
