"""DNO's invariants (Rosset et al. 2024, arXiv:2404.03715)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, first_trained_token, random_batch

DNO = get_algorithm("dno")
DPO = get_algorithm("dpo")
B, T = 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
betas = st.sampled_from([0.05, 0.1, 1.0])


@given(seeds, betas, st.booleans())
def test_dno_prct_is_dpo_with_the_previous_iterate_as_reference(seed, beta, ties):
    """Hard labels, no margin: DNO-Prct's loss and gradient are DPO's with
    π_ref replaced by π_t (the behaviour log-probs)."""
    rollout, stats = random_batch(seed, B, T, 2, binary_rewards=ties)
    loss, _, grads = jitted(DNO, DNO.Config(beta=beta))(stats, rollout)
    as_dpo = rollout.replace(ref_logprobs=rollout.behaviour_logprobs)
    loss2, _, grads2 = jitted(DPO, DPO.Config(beta=beta))(stats, as_dpo)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.0, 1.5))
def test_margin_filter_drops_exactly_the_small_gap_pairs(seed, margin):
    """Pairs with |r_w − r_l| ≤ margin get no gradient; the others keep the
    gradient they have without the filter."""
    rollout, stats = random_batch(seed, B, T, 2)
    _, _, full = jitted(DNO, DNO.Config())(stats, rollout)
    _, _, filtered = jitted(DNO, DNO.Config(min_margin=margin))(stats, rollout)
    gap = np.abs(np.diff(np.asarray(rollout.rewards).reshape(-1, 2), axis=1))[:, 0]
    small = np.repeat(gap <= margin, 2)
    assert np.all(np.asarray(filtered.logprobs)[small] == 0)
    np.testing.assert_allclose(np.asarray(filtered.logprobs)[~small], np.asarray(full.logprobs)[~small], rtol=1e-6)


def _soft_loss_naive(rollout, stats, beta):
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs), 0.0).sum(1)
    r = np.asarray(rollout.rewards, np.float64)
    total = 0.0
    for i in range(0, B, 2):
        z = beta * (s[i] - s[i + 1])
        p = 1.0 / (1.0 + np.exp(-(r[i] - r[i + 1])))
        total += -p * np.log(1 / (1 + np.exp(-z))) - (1 - p) * np.log(1 / (1 + np.exp(z)))
    return total / (B / 2)


@given(seeds, betas)
def test_soft_labels_match_the_naive_cross_entropy(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = jitted(DNO, DNO.Config(beta=beta, soft_labels=True))(stats, rollout)
    np.testing.assert_allclose(loss, _soft_loss_naive(rollout, stats, beta), rtol=1e-5)


@given(seeds, betas, st.lists(st.floats(-5, 5), min_size=B // 2, max_size=B // 2))
def test_soft_policy_iteration_step_is_the_fixed_point(seed, beta, offsets):
    """With soft labels σ(r_t(y) − r_t(y')), the gradient vanishes at
    log π_θ/π_t = r_t/β (+ a per-prompt constant): the soft policy
    iteration π_{t+1} ∝ π_t exp(r_t/η) with η = β."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    target = np.asarray(rollout.rewards, np.float64) / beta + np.repeat(offsets, 2)
    logp = np.asarray(rollout.behaviour_logprobs) + np.where(first, target[:, None], 0.0)
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    _, _, grads = jitted(DNO, DNO.Config(beta=beta, soft_labels=True))(stats, rollout)
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=2e-5)


@given(seeds, st.lists(st.floats(-100, 100), min_size=B // 2, max_size=B // 2), st.booleans())
def test_invariant_to_prompt_dependent_reward_shift(seed, shifts, soft):
    rollout, stats = random_batch(seed, B, T, 2)
    moved = rollout.replace(rewards=rollout.rewards + jnp.repeat(jnp.asarray(shifts, jnp.float32), 2))
    cfg = DNO.Config(soft_labels=soft)
    loss, _, grads = jitted(DNO, cfg)(stats, rollout)
    loss2, _, grads2 = jitted(DNO, cfg)(stats, moved)
    np.testing.assert_allclose(loss2, loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads2.logprobs, grads.logprobs, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("min_margin", -1.0, "--min-margin must be >= 0.0"),
    ("pair_mode", "random", "--pair-mode must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DNO.Config(**{field: value})
