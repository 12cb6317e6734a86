"""MHPO's invariants (Wang et al. 2026, arXiv:2603.16929): the per-token
gradient is −Â·w_t·e^{ψ−ζ}·sech²(log ρ/c) with ζ carrying no gradient; that
multiplier never exceeds e^c; on-policy the gradient is REINFORCE's scaled by
e^{−ζ(1)} (exactly REINFORCE's without the hazard); ψ is bounded, smooth and
the identity to first order at ρ = 1; each hazard term has its own parameters
and grows with the shift on its own side, downward shifts costing more at the
defaults; without the hazard and with a wide modulator the loss tends to the
unclipped surrogate."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.mhpo import hazard_terms, log_fidelity
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

MHPO = get_algorithm("mhpo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = MHPO.Config()
AGG = "seq-mean-token-mean"


# One compilation per (algorithm, config) across hypothesis examples.
compiled = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 5)
    logp = np.minimum(np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T)), 0.0)
    return rollout, stats.replace(logprobs=jnp.asarray(logp, jnp.float32))


def _zeta(psi, cfg):
    """ζ in float64 from the paper's formula, softplus s(x) = log(1 + eˣ)."""
    softplus = lambda x: np.logaddexp(0.0, x)
    return ((softplus(psi) / cfg.hazard_scale_up) ** cfg.hazard_shape_up
            + (softplus(-psi) / cfg.hazard_scale_down) ** cfg.hazard_shape_down)


def _multiplier(log_ratio, cfg):
    """e^{ψ−ζ}·dψ/dlog ρ: the factor on −Â·w_t in the gradient."""
    c = cfg.fidelity_scale
    psi = c * np.tanh(log_ratio / c)
    zeta = _zeta(psi, cfg) if cfg.hazard else 0.0
    return np.exp(psi - zeta) * (1.0 - np.tanh(log_ratio / c) ** 2)


@given(seeds, st.booleans())
def test_on_policy_gradient_is_scaled_reinforce(seed, hazard):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = MHPO.Config(hazard=hazard)
    adv, _ = MHPO.advantages(rollout, cfg, ())
    _, metrics, grads = compiled(MHPO, cfg)(stats, rollout, adv)
    # s(0) = log 2, so ζ(1) = (log 2/λ₊)^{k₊} + (log 2/λ₋)^{k₋} ≠ 0: a constant survival weight.
    scale = np.exp(-_zeta(0.0, cfg)) if hazard else 1.0
    np.testing.assert_allclose(grads.logprobs, scale * np.asarray(reinforce_gradient(rollout, adv, AGG)),
                               rtol=1e-5, atol=1e-7)
    if hazard:
        np.testing.assert_allclose(metrics["hazard"], _zeta(0.0, cfg), rtol=1e-5)


@given(seeds, st.sampled_from([0.05, 0.5, 3.0]), st.booleans())
def test_gradient_is_the_closed_form_with_no_gradient_through_the_hazard(seed, shift, hazard):
    rollout, stats = _batch(seed, shift)
    cfg = MHPO.Config(hazard=hazard)
    adv, _ = MHPO.advantages(rollout, cfg, ())
    _, _, grads = compiled(MHPO, cfg)(stats, rollout, adv)
    log_ratio = np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64)
    expected = _multiplier(log_ratio, cfg) * np.asarray(reinforce_gradient(rollout, adv, AGG), np.float64)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-4, atol=1e-7)


@given(seeds, st.sampled_from([0.5, 3.0, 20.0]), st.sampled_from([0.5, 1.5, 3.0]))
def test_gradient_multiplier_is_bounded_by_e_to_the_c(seed, shift, c):
    """The paper's gradient bound: |∂ℓ/∂log π_t| ≤ e^c·|Â_t|·w_t for every ratio."""
    rollout, stats = _batch(seed, shift)
    for hazard in (True, False):
        cfg = MHPO.Config(fidelity_scale=c, hazard=hazard)
        adv, _ = MHPO.advantages(rollout, cfg, ())
        _, _, grads = compiled(MHPO, cfg)(stats, rollout, adv)
        bound = np.exp(c) * np.abs(np.asarray(reinforce_gradient(rollout, adv, AGG)))
        assert np.all(np.isfinite(np.asarray(grads.logprobs)))
        assert np.all(np.abs(np.asarray(grads.logprobs)) <= bound * (1 + 1e-5) + 1e-8)


@given(st.floats(-20.0, 20.0, width=32), st.sampled_from([0.5, 1.5, 3.0]))
def test_log_fidelity_is_bounded_smooth_and_identity_at_one(log_ratio, scale):
    value = float(log_fidelity(jnp.float32(log_ratio), scale))
    assert -scale * (1 + 1e-6) <= value <= scale * (1 + 1e-6)
    slope = float(jax.grad(lambda x: log_fidelity(x, scale))(jnp.float32(log_ratio)))
    assert np.isfinite(slope) and 0.0 <= slope <= 1.0 + 1e-6
    assert float(log_fidelity(jnp.float32(0.0), scale)) == 0.0
    np.testing.assert_allclose(float(jax.grad(lambda x: log_fidelity(x, scale))(jnp.float32(0.0))), 1.0)


@given(st.floats(0.0, 1.5, width=32), st.floats(0.0, 1.5, width=32))
def test_hazards_are_decoupled_monotone_and_asymmetric(x, y):
    small, large = jnp.float32(min(x, y)), jnp.float32(max(x, y))
    up_small, down_small = hazard_terms(small, CFG)
    up_large, down_large = hazard_terms(large, CFG)
    assert float(up_large) >= float(up_small) and float(down_large) <= float(down_small)
    # Each side has its own scale and shape: changing one leaves the other term alone.
    other = MHPO.Config(hazard_scale_down=7.0, hazard_shape_down=3.0)
    assert float(hazard_terms(large, other)[0]) == float(up_large)
    other = MHPO.Config(hazard_scale_up=7.0, hazard_shape_up=3.0)
    assert float(hazard_terms(large, other)[1]) == float(down_large)
    # Paper defaults (λ₋ < λ₊, k₋ > k₊): a downward shift costs more than the mirrored upward one.
    if float(large) > 1e-3:
        assert sum(map(float, hazard_terms(-large, CFG))) > sum(map(float, hazard_terms(large, CFG)))
    assert all(float(jax.grad(lambda z: hazard_terms(z, CFG)[i])(large)) == 0.0 for i in (0, 1))


@given(seeds, st.sampled_from([0.05, 0.3]))
def test_lfm_only_with_wide_modulator_tends_to_the_unclipped_surrogate(seed, shift):
    rollout, stats = _batch(seed, shift)
    cfg = MHPO.Config(hazard=False, fidelity_scale=1e3)
    grpo_cfg = GRPO.Config(clip_eps_low=1e9, kl_coef=0.0, aggregation=AGG)
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, _, grads = compiled(MHPO, cfg)(stats, rollout, adv)
    ref_loss, _, ref = compiled(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-4, atol=1e-7)


@given(seeds)
def test_far_off_policy_gradients_are_damped_not_zeroed(seed):
    """|log ρ| = 4 on every token: the gradient multiplier e^{ψ−ζ}·sech²(4/c) is
    positive but far below the unclipped surrogate's ρ."""
    rollout, stats = random_batch(seed, B, T, K)
    mask = rollout.loss_mask
    adv = jnp.where(mask, 1.0, 0.0)
    for sign in (1.0, -1.0):
        shifted = rollout.replace(behaviour_logprobs=jnp.where(mask, stats.logprobs - sign * 4.0, 0.0))
        _, _, grads = compiled(MHPO, CFG)(stats, shifted, adv)
        g = -np.asarray(grads.logprobs)[np.asarray(mask)]
        weights = -np.asarray(reinforce_gradient(shifted, adv, AGG))[np.asarray(mask)]
        np.testing.assert_allclose(g, _multiplier(sign * 4.0, CFG) * weights, rtol=1e-4, atol=1e-9)
        assert np.all(g > 0) and _multiplier(sign * 4.0, CFG) < 0.05 * np.exp(sign * 4.0)


@pytest.mark.parametrize("field", ["fidelity_scale", "hazard_scale_up", "hazard_shape_up",
                                   "hazard_scale_down", "hazard_shape_down"])
def test_config_rejects_non_positive_scales_and_shapes(field):
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be > 0.0"):
        MHPO.Config(**{field: 0.0})
