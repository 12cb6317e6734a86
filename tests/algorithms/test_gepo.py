"""GEPO's invariants (Wu et al. 2025, arXiv:2505.12723)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

GEPO, DPO = get_algorithm("gepo"), get_algorithm("dpo")
K, B, T = 4, 12, 10
seeds = st.integers(0, 2**16)
labels = st.lists(st.sampled_from([0.0, 1.0]), min_size=B, max_size=B)


@given(seeds, st.floats(0.02, 1.0), st.floats(0.0, 5.0))
def test_one_winner_one_loser_is_dpo(seed, beta, lam):
    rollout, stats = random_batch(seed, 8, T, 2)
    pairs = rollout.replace(rewards=jnp.tile(jnp.array([1.0, 0.0]), 4))
    loss, _, grads = loss_and_grad(GEPO, GEPO.Config(beta=beta, lam=lam), stats, pairs)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, pairs)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, labels, st.floats(0.0, 3.0))
def test_closed_form_on_set_means_and_winner_variance(seed, rewards, lam):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards))
    loss, _, _ = loss_and_grad(GEPO, GEPO.Config(lam=lam), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    r_hat = 0.1 * np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    total = 0.0
    for g in range(B // K):
        rows = slice(g * K, (g + 1) * K)
        win = np.asarray(rewards)[rows] > 0.5
        rg = r_hat[rows]
        if win.any() and (~win).any():
            total += np.logaddexp(0, -(rg[win].mean() - rg[~win].mean()))
        if win.any():
            total += lam * rg[win].var()
    np.testing.assert_allclose(loss, total / (B // K), rtol=1e-4, atol=1e-6)


@given(seeds, labels, st.randoms(use_true_random=False))
def test_invariant_to_permutations_within_a_group(seed, rewards, rnd):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards))
    order = np.concatenate([g * K + np.array(rnd.sample(range(K), K)) for g in range(B // K)])
    loss, _, grads = loss_and_grad(GEPO, GEPO.Config(), stats, rollout)
    loss2, _, grads2 = loss_and_grad(GEPO, GEPO.Config(), jax.tree.map(lambda x: x[order], stats), rollout.select_rows(order))
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads.logprobs)[order], grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds)
def test_equal_winner_rewards_leave_only_the_preference_gradient(seed):
    """When all winners of a group have the same implicit reward, the variance
    term is at its minimum: λ does not change the gradient."""
    rollout, stats = random_batch(seed, B, T, K)
    rewards = np.tile([1.0, 1.0, 0.0, 0.0], B // K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards))
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    # move each second winner's log-ratio onto its group partner's
    logp = np.asarray(stats.logprobs).copy()
    for g in range(B // K):
        a, b = g * K, g * K + 1
        first = np.argmax(mask[b])
        logp[b, first] += h[a] - h[b]
    stats = stats.replace(logprobs=jnp.asarray(logp))
    _, _, grads = loss_and_grad(GEPO, GEPO.Config(lam=0.0), stats, rollout)
    _, _, grads2 = loss_and_grad(GEPO, GEPO.Config(lam=7.0), stats, rollout)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("lam", -1.0, "--lam must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        GEPO.Config(**{field: value})
