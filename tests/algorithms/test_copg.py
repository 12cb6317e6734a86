"""CoPG's invariants (Flet-Berliac et al. 2024, arXiv:2406.19185)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, first_trained_token, random_batch

COPG = get_algorithm("copg")
RLOO = get_algorithm("rloo")
B, T = 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
betas = st.sampled_from([0.05, 0.1, 1.0])


def _first_token(rollout):
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    return mask, first


@given(seeds, betas, st.lists(st.floats(-100, 100), min_size=B // 2, max_size=B // 2))
def test_prompt_dependent_reward_shift_changes_nothing(seed, beta, shifts):
    rollout, stats = random_batch(seed, B, T, 2)
    moved = rollout.replace(rewards=rollout.rewards + jnp.repeat(jnp.asarray(shifts, jnp.float32), 2))
    cfg = COPG.Config(beta=beta)
    loss, _, grads = jitted(COPG, cfg)(stats, rollout)
    loss2, _, grads2 = jitted(COPG, cfg)(stats, moved)
    np.testing.assert_allclose(loss2, loss, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grads2.logprobs, grads.logprobs, rtol=1e-3, atol=1e-4)


@given(seeds, betas)
def test_gradient_is_the_contrastive_policy_gradient(seed, beta):
    """ℓ = (R^π_β(y) − R^π_β(y'))², so −∇ℓ = 2β (R^π_β(y) − R^π_β(y')) (∇log π(y) − ∇log π(y'))
    = 4β ĝ per pair, averaged over the P = B/2 pairs: every trained token of y
    gets −2β (R^π_β(y) − R^π_β(y'))/P."""
    rollout, stats = random_batch(seed, B, T, 2)
    _, _, grads = jitted(COPG, COPG.Config(beta=beta))(stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.ref_logprobs), 0.0).sum(1)
    regularised = np.asarray(rollout.rewards, np.float64) - beta * h
    partner = regularised.reshape(-1, 2)[:, ::-1].reshape(-1)
    expected = np.where(mask, -2 * beta * (regularised - partner)[:, None] / (B / 2), 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-4, atol=1e-6)


@given(seeds, betas, st.lists(st.floats(-3, 3), min_size=B // 2, max_size=B // 2))
def test_fixed_point_is_the_regularised_optimum(seed, beta, offsets):
    """β (h(y) − h(y')) = R(y) − R(y'), i.e. π ∝ π_ref exp(R/β): loss and gradient vanish."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask, first = _first_token(rollout)
    target = np.asarray(rollout.rewards, np.float64) / beta + np.repeat(offsets, 2)
    logp = np.asarray(rollout.ref_logprobs) + np.where(first, target[:, None], 0.0)
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    loss, _, grads = jitted(COPG, COPG.Config(beta=beta))(stats, rollout)
    assert loss < 1e-8
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=1e-5)


def _ipo_closed_form(logprobs, rollout, tau):
    """IPO (Azar et al. 2023, eq. 17): mean over pairs of (h_w − h_l − 1/(2τ))²."""
    h = jnp.sum(jnp.where(rollout.loss_mask, logprobs - rollout.ref_logprobs, 0.0), axis=1)
    r1, r2 = rollout.rewards[0::2], rollout.rewards[1::2]
    margin = jnp.where(r1 > r2, h[0::2] - h[1::2], h[1::2] - h[0::2])
    return jnp.mean((margin - 1.0 / (2.0 * tau)) ** 2)


@given(seeds, betas, st.floats(-5, 5))
def test_preference_rewards_reduce_to_ipo(seed, beta, base):
    """Rewards base + ½ for the preferred and base for the other response: the
    CoPG loss (½ − βΔh)² is β² times IPO's (Δh − 1/(2τ))² with τ = β (loss and gradient)."""
    rollout, stats = random_batch(seed, B, T, 2)
    winners = np.random.default_rng(seed).integers(0, 2, B // 2)
    rewards = np.full(B, base, np.float32)
    rewards[np.arange(0, B, 2) + winners] += 0.5
    rollout = rollout.replace(rewards=jnp.asarray(rewards))
    loss, _, grads = jitted(COPG, COPG.Config(beta=beta))(stats, rollout)
    ipo, ipo_grad = jax.value_and_grad(_ipo_closed_form)(stats.logprobs, rollout, beta)
    np.testing.assert_allclose(loss, beta**2 * ipo, rtol=1e-4)
    np.testing.assert_allclose(grads.logprobs, beta**2 * ipo_grad, rtol=1e-4, atol=1e-6)


@given(seeds, betas)
def test_at_the_reference_it_is_policy_gradient_with_the_partner_as_baseline(seed, beta):
    """At π_θ = π_ref the gradient is 4β times RLOO's for K = 2."""
    rollout, stats = random_batch(seed, B, T, 2)
    rollout = rollout.replace(ref_logprobs=jnp.where(rollout.loss_mask, stats.logprobs, 0.0))
    _, _, grads = jitted(COPG, COPG.Config(beta=beta))(stats, rollout)
    _, _, parent = jitted(RLOO, RLOO.Config())(stats, rollout)
    np.testing.assert_allclose(grads.logprobs, 4 * beta * parent.logprobs, rtol=1e-5, atol=1e-7)


@given(seeds, betas)
def test_loss_is_the_squared_difference_of_regularised_rewards(seed, beta):
    """The paper's loss itself: mean over pairs of (R^π_β(y) − R^π_β(y'))²."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = jitted(COPG, COPG.Config(beta=beta))(stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.ref_logprobs), 0.0).sum(1)
    regularised = (np.asarray(rollout.rewards, np.float64) - beta * h).reshape(-1, 2)
    np.testing.assert_allclose(loss, np.mean((regularised[:, 0] - regularised[:, 1]) ** 2), rtol=1e-4)


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_non_positive_beta_is_rejected(beta):
    """The loss is constant at β = 0, so β must be positive."""
    with pytest.raises(ValueError, match="copg: --beta must be > 0.0"):
        COPG.Config(beta=beta)


def test_pair_mode_is_checked():
    with pytest.raises(ValueError, match="--pair-mode must be one of best_vs_worst, all_pairs"):
        COPG.Config(pair_mode="random")


def test_targets_are_the_group_centred_rewards():
    """row_targets: each row's reward minus its group's mean (0 for a row with
    no trained token); the logged advantage carries it on the row's tokens."""
    rollout, _ = random_batch(0, B, T, 2, masked_rows=(3,))
    targets, _ = COPG.advantages(rollout, COPG.Config(), ())
    r = np.asarray(rollout.rewards, np.float64).reshape(-1, 2)
    centred = (r - r.mean(1, keepdims=True)).reshape(-1)
    centred[3] = 0.0
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(targets["row_targets"], centred, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(targets["advantages"], np.where(mask, centred[:, None], 0.0), rtol=1e-6, atol=1e-7)
