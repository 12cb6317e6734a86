"""GPG's invariants (Chu et al. 2025, arXiv:2504.02546)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, loss_and_grad, random_batch, reinforce_gradient

GPG = get_algorithm("gpg")
REINFORCE = get_algorithm("reinforce")
K, B, T = 4, 8, 10
G = B // K
# Few distinct values, so that all-equal ("invalid") groups occur often.
rewards_strategy = st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=B, max_size=B)
STEP = compiled(GPG, GPG.Config())


def row_advantage(rollout, cfg):
    adv, _ = GPG.advantages(rollout, cfg, ())
    return np.asarray(ops.sequence_mean(adv, rollout.loss_mask), np.float64)


@given(rewards_strategy, st.lists(st.sampled_from([0.0, 1.0, 2.5]), min_size=B, max_size=B))
def test_accurate_gradient_scale_is_batch_over_valid(rewards, weights):
    """α = min(B / (B − M), 20), M = (weighted) rows in all-equal groups, counted by a Python loop."""
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(
        rewards=jnp.asarray(rewards, jnp.float32), sample_weight=jnp.asarray(weights, jnp.float32)
    )
    invalid = 0.0
    for g in range(G):
        if len(set(rewards[g * K:(g + 1) * K])) == 1:
            invalid += sum(weights[g * K:(g + 1) * K])
    total = sum(weights)
    alpha = min(total / (total - invalid), 20.0) if total - invalid > 0 else 1.0
    grouped = np.asarray(rewards).reshape(G, K)
    expected = alpha * (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
    np.testing.assert_allclose(row_advantage(rollout, GPG.Config()), expected, rtol=1e-5, atol=1e-6)


@given(st.integers(21, 60), st.floats(0.1, 10.0))
def test_accurate_gradient_scale_is_capped_at_the_official_twenty(groups, gap):
    """The official trainer divides the loss by max((B − M)/B, 0.05): with one mixed group among
    `groups` (> 20) groups of 2, B/(B − M) = groups exceeds 20 and α stops at 20."""
    k = 2
    rollout, _ = random_batch(2, groups * k, T, k)
    rewards = np.zeros(groups * k, np.float32)
    rewards[1] = gap
    rollout = rollout.replace(rewards=jnp.asarray(rewards), sample_weight=jnp.ones(groups * k, jnp.float32))
    got = row_advantage(rollout, GPG.Config())
    np.testing.assert_allclose(got[:2], 20.0 * np.array([-gap / 2, gap / 2]), rtol=1e-5)
    uncapped = row_advantage(rollout, GPG.Config(max_alpha=1e6))  # effectively uncapped (finite: ConfigBase)
    np.testing.assert_allclose(uncapped[:2], groups * got[:2] / 20.0, rtol=1e-5)
    assert np.all(got[2:] == 0)


@given(st.lists(st.floats(-10, 10, width=32), min_size=B, max_size=B), st.floats(-5, 5))
def test_advantage_has_zero_group_mean_and_is_shift_invariant(rewards, shift):
    rollout, _ = random_batch(1, B, T, K)
    rewards = jnp.asarray(rewards, jnp.float32)
    for cfg in (GPG.Config(), GPG.Config(std_normalise=True)):
        base = row_advantage(rollout.replace(rewards=rewards), cfg)
        assert np.all(np.abs(base.reshape(G, K).mean(1)) <= 1e-4 * (1 + np.abs(base).max()))
        moved = row_advantage(rollout.replace(rewards=rewards + shift), cfg)
        np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16))
def test_gradient_is_plain_policy_gradient(seed):
    """No ratio: the gradient is −Â_t / N_tok whatever π_old is (off-policy included)."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=(0,))
    adv, _ = GPG.advantages(rollout, GPG.Config(), ())
    _, _, grads = STEP(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-6, atol=1e-9)


@given(st.integers(0, 2**16), st.sets(st.integers(0, G - 1), max_size=G - 1))
def test_without_age_reduces_to_group_mean_reinforce(seed, degenerate):
    """α = 1: GPG is REINFORCE with the group-mean baseline and token-mean aggregation."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=tuple(sorted(degenerate)))
    cfg = GPG.Config(accurate_gradient=False)
    loss, _, grads = loss_and_grad(GPG, cfg, stats, rollout)
    ref_loss, _, ref_grads = loss_and_grad(REINFORCE, REINFORCE.Config(aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-9)
    # With AGE on, the gradient is the same up to α = B / (B − M).
    _, _, age_grads = loss_and_grad(GPG, GPG.Config(), stats, rollout)
    alpha = B / (B - K * len(degenerate))
    np.testing.assert_allclose(age_grads.logprobs, alpha * np.asarray(ref_grads.logprobs), rtol=1e-5, atol=1e-9)


def test_config_defaults_and_rejected_values():
    cfg = GPG.Config()
    assert (cfg.max_alpha, cfg.std_eps, cfg.aggregation, cfg.kl_coef) == (20.0, 1e-4, "token-mean", 0.0)
    with pytest.raises(ValueError, match="max-alpha must be >= 1"):
        GPG.Config(max_alpha=0.5)
    with pytest.raises(ValueError, match="max-alpha must be finite"):
        GPG.Config(max_alpha=float("inf"))
    with pytest.raises(ValueError, match="std-eps must be > 0"):
        GPG.Config(std_eps=0.0)
