"""REFUEL's invariants (Gao et al. 2024, arXiv:2410.04612)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, first_trained_token, random_batch

REFUEL = get_algorithm("refuel")
REBEL = get_algorithm("rebel")
B, T = 8, 12
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
etas = st.sampled_from([0.5, 1.0, 3.0])


def _multi_turn(seed):
    """Pairs sharing a history: the first trained token of each row starts
    turn h; later tokens of the row (the π_t roll-out to the end of the
    dialogue) are untrained context, with per-token rewards everywhere."""
    rollout, stats = random_batch(seed, B, T, 2)
    rng = np.random.default_rng(seed)
    mask = np.asarray(rollout.loss_mask).copy()
    for row in range(B):
        on = np.flatnonzero(mask[row])
        if len(on) > 3:
            mask[row, on[3:]] = False  # turn h is the first three generated tokens
    token_rewards = rng.normal(0, 1, (B, T)).astype(np.float32)
    rollout = rollout.replace(loss_mask=jnp.asarray(mask), token_rewards=jnp.asarray(token_rewards))
    return rollout, stats


@given(seeds, etas)
def test_single_turn_refuel_is_rebel_without_kl(seed, eta):
    """H = 1: Q̂ is the response's reward and REFUEL's loss and gradient are REBEL's."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = jitted(REFUEL, REFUEL.Config(eta=eta))(stats, rollout)
    loss2, _, grads2 = jitted(REBEL, REBEL.Config(eta=eta, kl_coef=0.0))(stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-6, atol=1e-8)


def _reward_to_go(rollout):
    mask = np.asarray(rollout.loss_mask)
    first = mask.argmax(1)
    rewards = np.asarray(rollout.token_rewards, np.float64)
    return np.array([rewards[b, first[b]:].sum() for b in range(rewards.shape[0])])


@given(seeds, etas)
def test_reward_to_go_is_the_relative_future(seed, eta):
    """q_estimate="reward-to-go" equals the outcome form with Q̂ set to the
    sum of the token rewards from turn h on (a naive loop), and rewards earned
    during the shared history (before turn h) change nothing."""
    rollout, stats = _multi_turn(seed)
    cfg = REFUEL.Config(eta=eta, q_estimate="reward-to-go")
    loss, _, grads = jitted(REFUEL, cfg)(stats, rollout)
    as_outcome = rollout.replace(rewards=jnp.asarray(_reward_to_go(rollout), jnp.float32))
    loss2, _, grads2 = jitted(REFUEL, REFUEL.Config(eta=eta))(stats, as_outcome)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-6)

    mask = np.asarray(rollout.loss_mask)
    before = np.arange(T)[None, :] < mask.argmax(1)[:, None]
    history = np.where(before, 7.0 * np.random.default_rng(seed + 1).normal(size=(B, T)), 0.0)
    moved = rollout.replace(token_rewards=rollout.token_rewards + jnp.asarray(history, jnp.float32))
    loss3, _, grads3 = jitted(REFUEL, cfg)(stats, moved)
    np.testing.assert_allclose(loss3, loss, rtol=1e-5)
    np.testing.assert_allclose(grads3.logprobs, grads.logprobs, rtol=1e-4, atol=1e-6)


@given(seeds, etas, st.lists(st.floats(-50, 50), min_size=B // 2, max_size=B // 2))
def test_zero_loss_iff_log_ratio_gap_equals_eta_q_gap(seed, eta, offsets):
    """Loss 0 (and gradient 0) exactly when (1/η)Δs = ΔQ̂; shifting one row's
    turn-h log-ratio away from that solution makes it positive."""
    rollout, stats = _multi_turn(seed)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    target = eta * np.asarray(rollout.rewards, np.float64) + np.repeat(offsets, 2)
    logp = np.where(first, np.asarray(rollout.behaviour_logprobs) + target[:, None], np.asarray(rollout.behaviour_logprobs))
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    cfg = REFUEL.Config(eta=eta)
    loss, _, grads = jitted(REFUEL, cfg)(stats, rollout)
    assert loss < 1e-6
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=1e-4)
    row0 = jnp.asarray(first) & (jnp.arange(B) == 0)[:, None]
    nudged = stats.replace(logprobs=jnp.where(row0, stats.logprobs + 0.5, stats.logprobs))
    loss2, _, _ = jitted(REFUEL, cfg)(nudged, rollout)
    np.testing.assert_allclose(loss2, 0.25 / (B / 2), rtol=1e-3)


@pytest.mark.parametrize("field, value, message", [
    ("eta", 0.0, "--eta must be > 0.0"),
    ("q_estimate", "monte-carlo", "--q-estimate must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        REFUEL.Config(**{field: value})
