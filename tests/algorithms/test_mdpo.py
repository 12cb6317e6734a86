"""MDPO's invariants (Tomar et al. 2020, arXiv:2005.09814)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.mdpo import kl_to_behaviour
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

MDPO = get_algorithm("mdpo")
K, B, T = 4, 8, 10


@given(st.integers(0, 2**16))
def test_first_step_equals_grpo_without_kl(seed):
    """At θ = θ_k the ratio is 1 and the KL term has zero value and gradient:
    MDPO's loss and gradient are GRPO's (kl_coef = 0, token-mean)."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    state = MDPO.init_state(MDPO.Config())
    loss, metrics, grads = loss_and_grad(MDPO, MDPO.Config(), stats, rollout, state=state)
    grpo = get_algorithm("grpo")
    base_loss, _, base = loss_and_grad(grpo, grpo.Config(kl_coef=0.0, aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)
    assert abs(metrics["kl_old"]) < 1e-7


@given(st.integers(0, 2**16), st.floats(0.1, 10.0))
def test_gradient_is_is_surrogate_plus_proximal_term(seed, step):
    """∇ℓ_t = w_t (−Â ρ + (1/t) ρ log ρ) (d/dlog π of −ρÂ + (ρ log ρ − ρ + 1)/t)."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = MDPO.Config(step_size=step)
    adv, state = MDPO.advantages(rollout, cfg, MDPO.init_state(cfg))
    _, _, grads = loss_and_grad(MDPO, cfg, stats, rollout, state=state, adv=adv)
    log_ratio = np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64)
    rho = np.exp(log_ratio)
    a = np.asarray(adv)
    # reinforce_gradient(x) = −w·x, so pass the coefficient of −w.
    want = np.asarray(reinforce_gradient(rollout, a * rho - rho * log_ratio / step, "token-mean"))
    np.testing.assert_allclose(grads.logprobs, want, rtol=2e-4, atol=1e-7)


@given(st.integers(0, 2**16))
def test_large_step_is_the_unregularised_is_surrogate(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = MDPO.Config(step_size=1e12)
    adv, state = MDPO.advantages(rollout, cfg, MDPO.init_state(cfg))
    _, _, grads = loss_and_grad(MDPO, cfg, stats, rollout, state=state, adv=adv)
    rho = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))
    want = np.asarray(reinforce_gradient(rollout, np.asarray(adv) * rho, "token-mean"))
    np.testing.assert_allclose(grads.logprobs, want, rtol=2e-4, atol=1e-8)


@given(st.lists(st.floats(-4, 4), min_size=5, max_size=5), st.lists(st.floats(-4, 4), min_size=5, max_size=5))
def test_kl_estimator_is_unbiased_and_non_negative(logits_new, logits_old):
    """E_{y~π_old}[ρ log ρ − ρ + 1] = KL(π_θ ‖ π_old) exactly, each sample ≥ 0."""
    new = np.asarray(logits_new) - np.log(np.sum(np.exp(logits_new)))
    old = np.asarray(logits_old) - np.log(np.sum(np.exp(logits_old)))
    samples = np.asarray(kl_to_behaviour(jnp.asarray(new, jnp.float32), jnp.asarray(old, jnp.float32)), np.float64)
    assert np.all(samples >= -1e-5)
    exact = np.sum(np.exp(new) * (new - old))
    np.testing.assert_allclose(np.sum(np.exp(old) * samples), exact, rtol=1e-3, atol=1e-4)


def test_annealed_step_size_tightens_the_proximal_term():
    """With anneal_iterations K, 1/t_k = 1/(t (1 − k/K)) grows batch by batch."""
    rollout, stats = random_batch(1, B, T, K)
    cfg = MDPO.Config(step_size=2.0, anneal_iterations=4)
    state = MDPO.init_state(cfg)
    weights = []
    for _ in range(6):
        adv, state = MDPO.advantages(rollout, cfg, state)
        _, metrics = MDPO.loss(stats, rollout, adv, cfg, state)
        weights.append(float(metrics["proximal_weight"]))
    np.testing.assert_allclose(weights, [0.5, 0.5 / 0.75, 1.0, 2.0, 2.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("step_size", 0.0, "--step-size must be > 0.0"),
    ("anneal_iterations", 0, "--anneal-iterations must be >= 1"),
    ("kl_coef", -1.0, "--kl-coef must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MDPO.Config(**{field: value})
