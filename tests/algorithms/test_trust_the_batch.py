"""Trust-the-Batch's invariants (Fakoor et al. 2026, arXiv:2605.12380; FeynRL P3O)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

TTB = get_algorithm("trust_the_batch")
K, B, T = 4, 8, 10
weights = st.lists(st.floats(0.01, 100.0), min_size=12, max_size=12).map(lambda v: jnp.asarray(v, jnp.float32))


def ess(x):
    x = np.asarray(x, np.float64)
    return x.sum() ** 2 / (len(x) * np.sum(x ** 2))


@given(weights, st.floats(0.01, 100.0))
def test_ess_is_in_range_and_scale_invariant(x, c):
    mask = jnp.ones_like(x)
    value = float(ops.effective_sample_size(x, mask))
    assert 1 / len(x) - 1e-6 <= value <= 1 + 1e-6
    np.testing.assert_allclose(value, ess(x), rtol=1e-4)
    np.testing.assert_allclose(float(ops.effective_sample_size(c * x, mask)), value, rtol=1e-4)


def test_ess_limits():
    assert float(ops.effective_sample_size(jnp.full(7, 3.0), jnp.ones(7))) == 1.0
    spike = jnp.asarray([1e4] + [1e-3] * 9)
    np.testing.assert_allclose(float(ops.effective_sample_size(spike, jnp.ones(10))), 0.1, rtol=1e-3)


@given(st.integers(0, 2**16))
def test_on_policy_is_reinforce_with_the_same_advantages(seed):
    """Uniform ratios: ESS = 1, weight 1 and no KL term, i.e. the on-policy
    score-function update: REINFORCE's loss and gradient (token-mean) with
    Trust-the-Batch's advantages."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = TTB.advantages(rollout, TTB.Config(), ())
    loss, metrics, grads = loss_and_grad(TTB, TTB.Config(), stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_loss, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="token-mean"), stats, rollout, adv=adv)
    np.testing.assert_allclose(metrics["ess"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)


@given(st.integers(0, 2**16), st.floats(0.5, 3.0))
def test_gradient_is_ess_capped_pg_plus_scaled_kl(seed, spread):
    """∂L/∂log π_t = w_t [−Â min(ρ, ESS) + (1 − ESS)(1 − 1/ρ)], ESS re-derived in numpy."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = rollout.replace(behaviour_logprobs=rollout.behaviour_logprobs * spread)
    adv, _ = TTB.advantages(rollout, TTB.Config(), ())
    _, metrics, grads = loss_and_grad(TTB, TTB.Config(), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    rho = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))
    e = ess(rho[mask])
    np.testing.assert_allclose(metrics["ess"], e, rtol=1e-4)
    coef = np.asarray(adv) * np.minimum(rho, e) - (1 - e) * (1 - 1 / rho)
    # k3 is clamped at 10 (no gradient beyond); compare where it is not.
    k3 = 1 / rho - 1 + np.log(rho)
    clear = ~mask | (np.abs(k3) < 9.9)
    want = np.asarray(reinforce_gradient(rollout, coef, "token-mean"))
    np.testing.assert_allclose(np.asarray(grads.logprobs)[clear], want[clear], rtol=2e-4, atol=1e-7)


@given(st.integers(0, 2**16))
def test_reference_kl_is_the_shared_penalty(seed):
    """kl_coef adds FeynRL's kl_coeff·KL_ref (k3) on top of the ESS terms, and only then
    does the algorithm read the reference log-probs."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = TTB.Config(kl_coef=0.3)
    assert TTB.required(TTB.Config()) == frozenset() and TTB.required(cfg) == {"ref_logprobs"}
    loss, _, _ = loss_and_grad(TTB, cfg, stats, rollout)
    base, _, _ = loss_and_grad(TTB, TTB.Config(), stats, rollout)
    kl_ref = ops.aggregate(ops.kl_estimate(stats.logprobs, rollout.ref_logprobs, "k3"), rollout, "token-mean")
    np.testing.assert_allclose(loss - base, 0.3 * kl_ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("field, value, message", [
    ("kl_coef", -1.0, "--kl-coef must be >= 0.0"),
    ("std_eps", -1e-6, "--std-eps must be > 0.0"),
    ("kl_estimator", "k4", "--kl-estimator must be one of k1, k2, k3"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        TTB.Config(**{field: value})
