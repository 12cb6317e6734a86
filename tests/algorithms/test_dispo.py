"""DISPO's invariants (Karaman et al. 2026, arXiv:2602.00983): with the four
bounds equal it is CISPO; clipped tokens keep the truncated-weight gradient
−sg(w)Â∇log π with the bounds picked by the advantage's sign; at ρ ≡ 1 it is
REINFORCE."""

import functools
import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

DISPO = get_algorithm("dispo")
CISPO = get_algorithm("cispo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = DISPO.Config()

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 3)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


@given(seeds, st.sampled_from([(0.2, 0.28), (1.0, 4.0), (0.1, 0.1)]), st.sampled_from([0.3, 1.5]))
def test_equal_bounds_are_cispo(seed, bounds, shift):
    down, up = bounds
    cfg = DISPO.Config(eps_up_correct=up, eps_down_correct=down, eps_up_incorrect=up, eps_down_incorrect=down)
    cispo_cfg = CISPO.Config(eps_low_is=down, eps_high_is=up)
    rollout, stats = _batch(seed, shift)
    adv, _ = CISPO.advantages(rollout, cispo_cfg, ())
    loss, _, grads = jitted(DISPO, cfg)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted(CISPO, cispo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.sampled_from([0.3, 1.5, 4.0]))
def test_gradient_is_the_sign_dependent_truncated_weight(seed, shift):
    """∂ℓ/∂log π_t = −w_t · clip(ρ_t, 1 − ε_down^s, 1 + ε_up^s) · Â_t: never zeroed by clipping."""
    rollout, stats = _batch(seed, shift)
    adv, _ = DISPO.advantages(rollout, CFG, ())
    _, _, grads = jitted(DISPO, CFG)(stats, rollout, adv)
    r = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))
    a = np.asarray(adv, np.float64)
    low = np.where(a > 0, 1 - CFG.eps_down_correct, 1 - CFG.eps_down_incorrect)
    high = np.where(a > 0, 1 + CFG.eps_up_correct, 1 + CFG.eps_up_incorrect)
    w = np.asarray(ops.token_weights(rollout, "token-mean"), np.float64)
    want = -w * np.clip(r, low, high) * a
    np.testing.assert_allclose(grads.logprobs, want, rtol=2e-5, atol=1e-7)
    mask = np.asarray(rollout.loss_mask)
    outside = mask & ((r < low) | (r > high)) & (a != 0)
    assert np.all(np.asarray(grads.logprobs)[outside] != 0)


def test_correct_and_incorrect_tokens_use_their_own_bounds():
    """ρ = 2 everywhere: a correct token's weight is capped at 1.28, an incorrect one's stays 2."""
    rollout, stats = random_batch(1, B, T, K)
    mask = rollout.loss_mask
    rollout = rollout.replace(behaviour_logprobs=jnp.where(mask, stats.logprobs - np.log(2.0), 0.0))
    sign = jnp.where(jnp.arange(B)[:, None] % 2 == 0, 1.0, -1.0)
    adv = jnp.where(mask, sign, 0.0)
    _, _, grads = jitted(DISPO, CFG)(stats, rollout, adv)
    w = ops.token_weights(rollout, "token-mean")
    want = jnp.where(sign > 0, -w * 1.28, w * 2.0)
    np.testing.assert_allclose(grads.logprobs, jnp.where(mask, want, 0.0), rtol=1e-5, atol=1e-8)


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = DISPO.advantages(rollout, CFG, ())
    _, metrics, grads = jitted(DISPO, CFG)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"eps_up_correct": -0.1}, 'dispo: --eps-up-correct must be >= 0.0; got -0.1'),
    ({"eps_down_incorrect": 1.5}, 'dispo: --eps-down-incorrect must be <= 1.0'),
    ({"kl_coef": -1.0}, 'dispo: --kl-coef must be >= 0.0'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DISPO.Config(**overrides)
