"""SAPO's invariants (Qwen team 2025, arXiv:2511.20347; catalogue #31)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, off_policy, on_policy, random_batch, reinforce_gradient

SAPO = get_algorithm("sapo")
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10


# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


@given(st.integers(0, 2**16), st.sampled_from([(1.0, 1.05), (0.3, 2.0), (5.0, 8.0)]))
def test_on_policy_gradient_is_reinforce_for_any_temperature(seed, taus):
    """The gate's slope at r = 1 is 4σ(0)(1 − σ(0)) = 1, so on-policy SAPO is REINFORCE."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = SAPO.Config(tau_pos=taus[0], tau_neg=taus[1])
    adv, _ = SAPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("sapo", cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-mean"), rtol=1e-5, atol=1e-8)


@given(st.integers(0, 2**16), st.sampled_from([0.3, 1.0, 2.5]), st.sampled_from([(1.0, 1.05), (0.5, 3.0)]))
def test_gradient_weight_is_a_smooth_positive_gate(seed, scale, taus):
    """∂L/∂log π_θ(y_t) = −w_t Â_t · 4σ(1 − σ)·r with σ = σ(τ(r − 1)), τ by the sign of Â (numpy):
    the weight is positive for every r and falls as r moves away from 1; no token is cut off
    (until float32 saturates σ, at τ|r − 1| ≳ 17)."""
    rollout, stats = off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=5)
    cfg = SAPO.Config(tau_pos=taus[0], tau_neg=taus[1])
    adv, _ = SAPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("sapo", cfg)(stats, rollout, adv)
    mask = np.asarray(rollout.loss_mask)
    a = np.asarray(adv, np.float64)
    r = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs))
    tau = np.where(a > 0, taus[0], taus[1])
    sig = 1.0 / (1.0 + np.exp(-tau * (r - 1.0)))
    slope = 4.0 * sig * (1.0 - sig) * r
    weights = np.asarray(ops.token_weights(rollout, "seq-mean-token-mean"))
    np.testing.assert_allclose(grads.logprobs, np.where(mask, -weights * a * slope, 0.0), rtol=1e-3, atol=1e-6)
    live = mask & (a != 0) & (tau * np.abs(r - 1.0) < 15.0)
    assert np.all(np.sign(np.asarray(grads.logprobs)[live]) == -np.sign(a[live]))


@given(st.floats(0.05, 3.0), st.sampled_from([0.5, 1.0, 2.0]))
def test_gate_slope_decays_away_from_on_policy(distance, tau):
    """f'_τ(r) = 4σ(1 − σ) is 1 at r = 1 and strictly smaller at r = 1 ± d (both sides)."""
    r = jnp.asarray([1.0, 1.0 + distance, max(1.0 - distance, 1e-3)], jnp.float32)
    slope = jax.vmap(jax.grad(lambda x: jax.nn.sigmoid(tau * (x - 1.0)) * 4.0 / tau))(r)
    assert abs(float(slope[0]) - 1.0) < 1e-6
    assert float(slope[1]) < 1.0 and float(slope[2]) < 1.0


@given(st.integers(0, 2**16), st.sampled_from([0.2, 0.6]))
def test_small_temperature_limit_is_the_unclipped_surrogate(seed, scale):
    """As τ → 0, f_τ(r) → 2/τ + (r − 1): the gradient is the unclipped surrogate's (GRPO with
    infinite ε, kl_coef = 0) and the loss differs from it by the constant −(2/τ − 1) Σ w_t Â_t."""
    tau = 1e-3
    rollout, stats = off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=5)
    cfg = SAPO.Config(tau_pos=tau, tau_neg=tau)
    adv, _ = SAPO.advantages(rollout, cfg, ())
    loss, _, grads = jitted("sapo", cfg)(stats, rollout, adv)
    grpo_cfg = GRPO.Config(kl_coef=0.0, clip_eps_low=1e9)
    ref_loss, _, ref_grads = jitted("grpo", grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=2e-3, atol=1e-6)
    offset = -(2.0 / tau - 1.0) * float(ops.aggregate(adv, rollout, "seq-mean-token-mean"))
    np.testing.assert_allclose(loss, ref_loss + offset, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("field, value", [("tau_pos", 0.0), ("tau_neg", -1.0)])
def test_config_rejects_non_positive_temperatures(field, value):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be > 0.0"):
        SAPO.Config(**{field: value})
