"""PPO with GAE (Schulman et al. 2016, 2017)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

PPO = get_algorithm("ppo")
B, T, K = 8, 10, 2
seeds = st.integers(0, 2**16)


@given(seeds)
def test_gae_with_unit_lambda_and_gamma_is_return_to_go_minus_value(seed):
    rollout, _ = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    token_rewards = np.where(rollout.loss_mask, rng.normal(0, 1, (B, T)), 0.0).astype(np.float32)
    rollout = rollout.replace(token_rewards=jnp.asarray(token_rewards))
    cfg = PPO.Config(gamma=1.0, lam=1.0, kl_coef=0.0, whiten_advantages=False)
    targets, _ = PPO.advantages(rollout, cfg, ())
    mask = np.asarray(rollout.loss_mask)
    return_to_go = np.flip(np.cumsum(np.flip(token_rewards, 1), 1), 1)
    want = np.where(mask, return_to_go - np.asarray(rollout.old_values), 0.0)
    np.testing.assert_allclose(targets["advantages"], want, rtol=1e-4, atol=1e-4)
    # The value target R_t = A_t + V_old(t) is the return-to-go itself.
    np.testing.assert_allclose(np.where(mask, targets["returns"], 0.0), np.where(mask, return_to_go, 0.0),
                               rtol=1e-4, atol=1e-4)


@given(seeds)
def test_gae_with_zero_lambda_is_the_td_error(seed):
    rollout, _ = random_batch(seed, B, T, K, masked_rows=(2,))
    cfg = PPO.Config(gamma=0.9, lam=0.0, kl_coef=0.0, whiten_advantages=False)
    adv = PPO.advantages(rollout, cfg, ())[0]["advantages"]
    mask, values = np.asarray(rollout.loss_mask), np.asarray(rollout.old_values)
    rewards = np.asarray(ops.outcome_token_rewards(rollout))
    for b in range(B):
        positions = np.flatnonzero(mask[b])
        for i, t in enumerate(positions):
            next_value = values[b, positions[i + 1]] if i + 1 < len(positions) else 0.0
            np.testing.assert_allclose(adv[b, t], rewards[b, t] + 0.9 * next_value - values[b, t], rtol=1e-5, atol=1e-5)


@given(seeds)
def test_on_policy_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = PPO.Config()
    adv = PPO.advantages(rollout, cfg, ())[0]["advantages"]
    _, metrics, grads = loss_and_grad(PPO, cfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, cfg.aggregation), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@given(seeds)
def test_value_loss_gradient_pulls_values_to_returns_and_stops_when_clipped(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = PPO.Config(value_clip=None)
    _, returns = ops.gae(
        ops.outcome_token_rewards(rollout) + ops.kl_reward_penalty(rollout, cfg.kl_coef),
        rollout.old_values, rollout.loss_mask, cfg.gamma, cfg.lam,
    )
    targets, _ = PPO.advantages(rollout, cfg, ())
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(np.where(mask, targets["returns"], 0), np.where(mask, returns, 0), rtol=1e-5, atol=1e-6)
    _, _, grads = loss_and_grad(PPO, cfg, stats, rollout)
    weights = ops.token_weights(rollout, cfg.aggregation)
    want = cfg.vf_coef * weights * (stats.values - returns)
    np.testing.assert_allclose(grads.values, want, rtol=1e-4, atol=1e-7)
    # A value moved toward its return past V_old + ε_V: the clipped term is the
    # larger (pessimistic) one and the gradient stops.
    moved = stats.replace(values=rollout.old_values + 1.0)
    _, _, grads = loss_and_grad(PPO, PPO.Config(value_clip=0.2), moved, rollout)
    beyond = np.asarray(rollout.loss_mask) & (np.asarray(returns) > np.asarray(rollout.old_values) + 1.0)
    assume(beyond.any())
    assert np.all(np.asarray(grads.values)[beyond] == 0)
    # Where the unclipped error is the larger one (R < V_old + 0.6), it still pulls.
    pulled = np.asarray(rollout.loss_mask) & (np.asarray(returns) < np.asarray(rollout.old_values) + 0.59)
    assert np.all(np.asarray(grads.values)[pulled] > 0)


def test_without_critic_no_value_loss_and_no_values_needed():
    cfg = PPO.Config(vf_coef=0.0, kl_coef=0.0)
    assert PPO.required(cfg) == frozenset()
    rollout, stats = random_batch(0, B, T, K)
    _, metrics, grads = loss_and_grad(PPO, cfg, stats, rollout.replace(old_values=None))
    assert "value_loss" not in metrics and np.all(np.asarray(grads.values) == 0)


@given(seeds, st.floats(-2.0, 2.0))
def test_value_loss_reads_the_returns_target(seed, shift):
    """The loss takes R from the targets and does not recompute it: shifting the carried
    returns moves the value gradient to c_V·w·(V − R − shift) and leaves the policy gradient."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = PPO.Config(value_clip=None)
    targets, _ = PPO.advantages(rollout, cfg, ())
    moved = dict(targets, returns=targets["returns"] + shift)
    _, _, grads = loss_and_grad(PPO, cfg, stats, rollout, adv=moved)
    _, _, base = loss_and_grad(PPO, cfg, stats, rollout, adv=targets)
    weights = ops.token_weights(rollout, cfg.aggregation)
    want = cfg.vf_coef * weights * (stats.values - moved["returns"])
    np.testing.assert_allclose(grads.values, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-6, atol=1e-9)


def test_config_defaults_and_rejected_values():
    cfg = PPO.Config()
    assert (cfg.clip_bounds, cfg.dual_clip, cfg.kl_coef, cfg.kl_estimator) == ((0.2, 0.2), None, 0.05, "k1")
    assert (cfg.gamma, cfg.lam, cfg.vf_coef, cfg.value_clip, cfg.aggregation) == (1.0, 0.95, 0.1, 0.2, "token-mean")
    assert PPO.required(cfg) >= {"values", "ref_logprobs"}
    with pytest.raises(ValueError, match="clip-eps-low must be >= 0"):
        PPO.Config(clip_eps_low=-1.0)
    with pytest.raises(ValueError, match="lam must be <= 1"):
        PPO.Config(lam=1.5)
    with pytest.raises(ValueError, match="dual-clip must be > 1"):
        PPO.Config(dual_clip=1.0)
