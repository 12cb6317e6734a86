"""INPO's invariants (Zhang et al. 2024, arXiv:2407.00617)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.rollout import PolicyStats
from rlzoo.testing import compiled, first_trained_token, random_batch

INPO = get_algorithm("inpo")
B, T = 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
etas = st.sampled_from([0.01, 0.1, 1.0])
mixes = st.sampled_from([0.0, 1 / 3, 1.0])


def _ipo_closed_form(logprobs, rollout, tau):
    """IPO (Azar et al. 2023, eq. 17) over the pairs, written out directly:
    mean over decided pairs of (h_w − h_l − 1/(2τ))², h = Σ_t log π_θ − log π_ref."""
    mask = rollout.loss_mask
    h = jnp.sum(jnp.where(mask, logprobs - rollout.ref_logprobs, 0.0), axis=1)
    first, second = h[0::2], h[1::2]
    r1, r2 = rollout.rewards[0::2], rollout.rewards[1::2]
    margin = jnp.where(r1 > r2, first - second, second - first)
    decided = (r1 != r2).astype(jnp.float32)
    return jnp.sum(decided * (margin - 1.0 / (2.0 * tau)) ** 2) / (B / 2)


@given(seeds, etas, mixes, st.booleans())
def test_at_pi_t_equal_pi_ref_inpo_is_ipo(seed, eta, mix, ties):
    """π_t = π_ref makes the mixed reference π_ref: INPO's loss and gradient are
    IPO's with τ_IPO = η, for any KL weight τ/η."""
    rollout, stats = random_batch(seed, B, T, 2, binary_rewards=ties)
    rollout = rollout.replace(behaviour_logprobs=rollout.ref_logprobs)
    cfg = INPO.Config(eta=eta, tau=mix * eta)
    loss, _, grads = jitted(INPO, cfg)(stats, rollout)
    ipo, ipo_grad = jax.value_and_grad(_ipo_closed_form)(stats.logprobs, rollout, eta)
    np.testing.assert_allclose(loss, ipo, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, ipo_grad, rtol=1e-4, atol=1e-6)


@given(seeds, etas)
def test_tau_equal_eta_is_ipo_against_the_reference_at_every_iterate(seed, eta):
    """With τ = η the mixture puts all weight on π_ref: π_t (the behaviour
    log-probs) no longer matters."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = jitted(INPO, INPO.Config(eta=eta, tau=eta))(stats, rollout)
    ipo, ipo_grad = jax.value_and_grad(_ipo_closed_form)(stats.logprobs, rollout, eta)
    np.testing.assert_allclose(loss, ipo, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, ipo_grad, rtol=1e-4, atol=1e-6)


@given(seeds, etas, mixes, st.lists(st.floats(-10, 10), min_size=B, max_size=B))
def test_minimiser_sets_the_margin_over_the_mixture_to_one_over_two_eta(seed, eta, mix, noise):
    """log π_θ = (τ/η) log π_ref + (1 − τ/η) log π_t + c(y) with c(y_w) − c(y_l) = 1/(2η)
    is a zero of loss and gradient."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    rewards = np.asarray(rollout.rewards)
    chosen = rewards > rewards.reshape(-1, 2)[:, ::-1].reshape(-1)
    offset = np.repeat(np.asarray(noise[0::2]), 2) + np.where(chosen, 1.0 / (2 * eta), 0.0)
    mixed = mix * np.asarray(rollout.ref_logprobs) + (1 - mix) * np.asarray(rollout.behaviour_logprobs)
    logp = mixed + np.where(first, offset[:, None], 0.0)
    stats = PolicyStats(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    loss, metrics, grads = jitted(INPO, INPO.Config(eta=eta, tau=mix * eta))(stats, rollout)
    scale = 1.0 / (2 * eta)
    assert loss <= 1e-10 * (1 + scale) ** 2
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=1e-5 * (1 + scale))
    np.testing.assert_allclose(metrics["margin"], scale, rtol=1e-4)


@given(seeds)
def test_tied_pairs_carry_no_preference(seed):
    rollout, stats = random_batch(seed, B, T, 2)
    rewards = np.asarray(rollout.rewards).copy()
    rewards[1] = rewards[0]
    rollout = rollout.replace(rewards=jnp.asarray(rewards))
    _, _, grads = jitted(INPO, INPO.Config())(stats, rollout)
    assert np.all(np.asarray(grads.logprobs)[:2] == 0)
    assert np.any(np.asarray(grads.logprobs)[2:] != 0)


@pytest.mark.parametrize("field, value, message", [
    ("eta", 0.0, "--eta must be > 0.0"),
    ("tau", -0.1, "--tau must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        INPO.Config(**{field: value})
