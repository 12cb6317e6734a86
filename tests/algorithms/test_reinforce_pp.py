"""REINFORCE++-baseline's invariants (Hu et al. 2025, arXiv:2501.03262)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import reinforce_pp
from rlzoo.testing import compiled, loss_and_grad, on_policy, random_batch, reinforce_gradient

RPP = get_algorithm("reinforce_pp")  # the estimator paired with grpo's loss
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10
rewards_strategy = st.lists(st.floats(-20, 20, width=32), min_size=B, max_size=B)
STEP = compiled(RPP, RPP.Config())


def spread(rewards):
    grouped = np.asarray(rewards, np.float64).reshape(-1, K)
    return np.abs(grouped - grouped.mean(1, keepdims=True)).max()


@given(st.integers(0, 2**16), rewards_strategy)
def test_advantages_are_whitened_over_the_batch_tokens(seed, rewards):
    """Token-weighted mean 0 and variance 1 over the trained tokens of the batch
    (rows with sample_weight 0 excluded), equal to a numpy re-derivation."""
    assume(spread(rewards) > 1e-2)
    rollout, _ = random_batch(seed, B, T, K)
    weight = np.ones(B, np.float32)
    weight[seed % B] = 0.0
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32), sample_weight=jnp.asarray(weight))
    adv, _ = reinforce_pp.advantages(rollout, reinforce_pp.Config(), ())
    mask = np.asarray(rollout.loss_mask) & (weight[:, None] > 0)
    grouped = np.asarray(rewards, np.float64).reshape(-1, K)
    centred = np.broadcast_to((grouped - grouped.mean(1, keepdims=True)).reshape(-1, 1), (B, T))
    values = centred[mask]
    expected = np.where(mask, (centred - values.mean()) / np.sqrt(values.var() + 1e-8), 0.0)
    np.testing.assert_allclose(adv, expected, rtol=1e-4, atol=1e-4)
    got = np.asarray(adv)[mask]
    assert abs(got.mean()) < 1e-4 and abs(got.var() - 1) < 1e-3


@given(rewards_strategy, st.floats(-50, 50), st.floats(0.1, 10))
def test_invariant_to_group_shifts_and_global_scale(rewards, shift, scale):
    assume(spread(rewards) > 1e-2)
    rollout, _ = random_batch(2, B, T, K)
    rewards = jnp.asarray(rewards, jnp.float32)
    shifts = jnp.repeat(jnp.arange(B // K, dtype=jnp.float32) * shift, K)
    base, _ = reinforce_pp.advantages(rollout.replace(rewards=rewards), reinforce_pp.Config(), ())
    moved, _ = reinforce_pp.advantages(rollout.replace(rewards=scale * rewards + shifts), reinforce_pp.Config(), ())
    np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16))
def test_on_policy_gradient_is_token_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = RPP.advantages(rollout, RPP.Config(), ())
    _, metrics, grads = STEP(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-8)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16), st.integers(2, T - 2))
def test_one_group_of_equal_lengths_reduces_to_grpo(seed, length):
    """With a single group whose responses all have the same length, batch whitening is the
    group z-score with the biased std: REINFORCE++-baseline = GRPO(std_ddof=0, β = 0, token-mean)."""
    rollout, stats = random_batch(seed, B, T, group_size=B)
    mask = np.zeros((B, T), bool)
    mask[:, 1:1 + length] = True
    rollout = rollout.replace(loss_mask=jnp.asarray(mask))
    assume(np.ptp(np.asarray(rollout.rewards)) > 1e-2)
    rpp_cfg = RPP.Config(whiten_eps=0.0)
    grpo_cfg = GRPO.Config(kl_coef=0.0, std_ddof=0, std_eps=1e-30, aggregation="token-mean")
    loss, _, grads = loss_and_grad(RPP, rpp_cfg, stats, rollout)
    ref_loss, _, ref_grads = loss_and_grad(GRPO, grpo_cfg, stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)


def test_paired_defaults_and_rejected_values():
    """PPO's token clip ε = 0.2, token mean; KL loss off by default, k2 when switched on (OpenRLHF)."""
    cfg = RPP.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip) == (0.2, None, None)
    assert (cfg.aggregation, cfg.kl_coef, cfg.kl_estimator) == ("token-mean", 0.0, "k2")
    assert RPP.required(cfg) & {"ref_logprobs", "entropy"} == set()
    with pytest.raises(ValueError, match="whiten-eps must be >= 0"):
        reinforce_pp.Config(whiten_eps=-1e-8)
    with pytest.raises(ValueError, match="kl-estimator must be one of"):
        RPP.Config(kl_estimator="k4")
