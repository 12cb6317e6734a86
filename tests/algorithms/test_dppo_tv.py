"""DPPO-Binary-TV's invariants (Qi et al. 2026, arXiv:2602.04879; verl loss_mode=dppo_tv)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

DPPO = get_algorithm("dppo_tv")
K, B, T = 4, 8, 10


@given(st.integers(0, 2**16), st.floats(0.01, 0.5), st.sampled_from([None, 0.5, 2.0]))
def test_gradient_is_truncated_is_pg_inside_the_tv_region(seed, delta, cap):
    """∇ℓ = −w·Â·min(ρ, C) on tokens inside the binary-TV region, 0 outside,
    with the region re-derived in numpy from p = e^{log π}."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = DPPO.Config(delta_low=delta, delta_high=delta, is_cap=cap)
    adv, _ = DPPO.advantages(rollout, cfg, ())
    _, metrics, grads = loss_and_grad(DPPO, cfg, stats, rollout)
    logp = np.asarray(stats.logprobs, np.float64)
    old = np.asarray(rollout.behaviour_logprobs, np.float64)
    a = np.asarray(adv)
    shift = np.exp(logp) - np.exp(old)
    valid = np.where(a > 0, shift <= delta, shift >= -delta)
    weight = np.exp(logp - old)
    if cap is not None:
        weight = np.minimum(weight, cap)
    want = np.asarray(reinforce_gradient(rollout, adv, cfg.aggregation)) * weight * valid
    trained = np.asarray(rollout.loss_mask)
    # Tokens within float32 rounding of the boundary are not compared.
    clear = ~trained | (np.abs(np.abs(shift) - delta) > 1e-5)
    np.testing.assert_allclose(np.asarray(grads.logprobs)[clear], want[clear], rtol=2e-4, atol=1e-7)
    if clear.all():
        np.testing.assert_allclose(metrics["clip_frac"], 1 - valid[trained].mean(), atol=1e-6)


@given(st.integers(0, 2**16))
def test_on_policy_equals_reinforce_loss_and_gradient(seed):
    """At π_old = π_θ every token is inside the region and the weight is 1:
    DPPO is REINFORCE with the group-mean baseline and the same aggregation."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = DPPO.Config()
    loss, metrics, grads = loss_and_grad(DPPO, cfg, stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_cfg = reinforce.Config(aggregation="seq-mean-token-sum-norm")
    base_loss, _, base = loss_and_grad(reinforce, base_cfg, stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16))
def test_without_trust_region_gradient_is_grpos_unclipped_gradient(seed):
    """TV ≤ 1, so δ ≥ 1 disables the mask: the gradient is GRPO's with clipping
    switched off (bounds [0, 1e6]), β = 0 and DPPO's advantages/aggregation."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = DPPO.Config(delta_low=1.0, delta_high=1.0)
    _, _, grads = loss_and_grad(DPPO, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    gcfg = grpo.Config(clip_eps_low=1.0, clip_eps_high=1e6, kl_coef=0.0, scale_rewards=False,
                       aggregation="seq-mean-token-sum-norm")
    _, _, base = loss_and_grad(grpo, gcfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-4, atol=1e-8)


@given(st.integers(0, 2**16), st.floats(0.01, 0.4), st.floats(0.01, 0.4))
def test_blocked_fraction_shrinks_as_the_region_grows(seed, d1, d2):
    rollout, stats = random_batch(seed, B, T, K)
    lo, hi = sorted((d1, d2))
    _, tight, _ = loss_and_grad(DPPO, DPPO.Config(delta_low=lo, delta_high=lo), stats, rollout)
    _, loose, _ = loss_and_grad(DPPO, DPPO.Config(delta_low=hi, delta_high=hi), stats, rollout)
    assert loose["clip_frac"] <= tight["clip_frac"] + 1e-7


def test_moving_back_is_never_blocked():
    """A token whose probability fell while Â > 0 (or rose while Â < 0) keeps its
    gradient however small δ is; moving further in Â's direction is blocked."""
    rollout, stats = random_batch(5, B, T, K)
    cfg = DPPO.Config(delta_low=1e-4, delta_high=1e-4)
    adv = jnp.where(rollout.loss_mask, 1.0, 0.0)
    up = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs - 0.5, 0.0))
    down = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs + 0.5, 0.0))
    mask = np.asarray(rollout.loss_mask)
    _, _, g_up = loss_and_grad(DPPO, cfg, stats, up, adv=adv)
    _, _, g_down = loss_and_grad(DPPO, cfg, stats, down, adv=adv)
    assert np.all(np.asarray(g_up.logprobs)[mask] == 0)
    assert np.all(np.asarray(g_down.logprobs)[mask] < 0)


@pytest.mark.parametrize("overrides, message", [
    ({"delta_high": -0.15}, 'dppo_tv: --delta-high must be >= 0.0; got -0.15'),
    ({"is_cap": -1.0}, 'dppo_tv: --is-cap must be > 0.0'),
    ({"aggregation": "sum"}, 'dppo_tv: --aggregation must be one of'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DPPO.Config(**overrides)
