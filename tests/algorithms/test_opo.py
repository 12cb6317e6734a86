"""OPO's invariants (Hao et al. 2025, arXiv:2505.23585)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms import opo
from rlzoo.testing import loss_and_grad, random_batch, reinforce_gradient

OPO = get_algorithm("opo")  # the estimator paired with reinforce's loss
REINFORCE = get_algorithm("reinforce")
K, B, T = 4, 8, 10
G = B // K
rewards_strategy = st.lists(st.floats(-10, 10, width=32), min_size=B, max_size=B)


def row_advantage(rollout):
    adv, _ = opo.advantages(rollout, opo.Config(), ())
    return np.asarray(ops.sequence_mean(adv, rollout.loss_mask), np.float64)


@given(st.integers(0, 2**16), rewards_strategy)
def test_baseline_is_length_weighted_mean(seed, rewards):
    """b_g = Σ L_j R_j / Σ L_j by a Python loop; equivalently Σ_{i∈g} L_i Â_i = 0 (the baseline
    is the minimiser of Σ_i L_i (R_i − b)², the optimal one when ‖∇log π(y_i)‖² ∝ L_i)."""
    rollout, _ = random_batch(seed, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))
    got = row_advantage(rollout)
    lengths = np.asarray(rollout.loss_mask).sum(1)
    for g in range(G):
        rows = range(g * K, (g + 1) * K)
        baseline = sum(lengths[i] * rewards[i] for i in rows) / sum(lengths[i] for i in rows)
        for i in rows:
            np.testing.assert_allclose(got[i], rewards[i] - baseline, rtol=1e-5, atol=1e-4)
    weighted = (lengths * got).reshape(G, K).sum(1)
    assert np.all(np.abs(weighted) <= 1e-4 * (1 + np.abs(lengths * got).max()))


@given(st.integers(0, 2**16), rewards_strategy, st.floats(-20, 20))
def test_invariant_to_a_shift_per_group(seed, rewards, shift):
    rollout, _ = random_batch(seed, B, T, K)
    rewards = jnp.asarray(rewards, jnp.float32)
    shifts = jnp.repeat(jnp.arange(G, dtype=jnp.float32) * shift, K)
    base = row_advantage(rollout.replace(rewards=rewards))
    moved = row_advantage(rollout.replace(rewards=rewards + shifts))
    np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16))
def test_gradient_is_plain_policy_gradient(seed):
    rollout, stats = random_batch(seed, B, T, K)
    adv, _ = OPO.advantages(rollout, OPO.Config(), ())
    _, _, grads = loss_and_grad(OPO, OPO.Config(), stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-6, atol=1e-9)


@given(st.integers(0, 2**16), st.integers(1, T - 2))
def test_equal_lengths_reduce_to_group_mean_reinforce(seed, length):
    """When every response of a group has the same length, b is the group mean: OPO is
    REINFORCE with the group-mean baseline (token-mean)."""
    rollout, stats = random_batch(seed, B, T, K)
    mask = np.zeros((B, T), bool)
    for g in range(G):
        mask[g * K:(g + 1) * K, 1:1 + (length + g) % (T - 1) + 1] = True  # lengths differ across groups only
    rollout = rollout.replace(loss_mask=jnp.asarray(mask))
    loss, _, grads = loss_and_grad(OPO, OPO.Config(), stats, rollout)
    ref_loss, _, ref_grads = loss_and_grad(REINFORCE, REINFORCE.Config(aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-9)


def test_paired_defaults_and_rejected_values():
    """The official verl v0.2.0 loss: plain REINFORCE, token mean, no KL and no entropy term."""
    cfg = OPO.Config()
    assert (cfg.aggregation, cfg.kl_coef, cfg.entropy_coef) == ("token-mean", 0.0, 0.0)
    assert OPO.required(cfg) & {"ref_logprobs", "entropy"} == set()
    assert "ref_logprobs" in OPO.required(OPO.Config(kl_coef=0.1))
    with pytest.raises(ValueError, match="kl-coef must be >= 0"):
        OPO.Config(kl_coef=-0.1)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        OPO.Config(aggregation="sum")
