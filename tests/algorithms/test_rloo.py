"""RLOO (Kool et al. 2019; Ahmadian et al. 2024, arXiv:2402.14740)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import loss_and_grad, random_batch

RLOO = get_algorithm("rloo")
B, T = 12, 8
rewards = st.lists(st.floats(-50, 50), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


def per_row(rollout, cfg):
    adv, _ = RLOO.advantages(rollout, cfg, ())
    mask = np.asarray(rollout.loss_mask)
    return np.asarray(adv).sum(1) / np.maximum(mask.sum(1), 1)


@given(rewards, st.sampled_from([2, 3, 4, 6]))
def test_advantage_is_k_over_k_minus_1_times_centred_reward(r, k):
    rollout, _ = random_batch(0, B, T, k)
    rollout = rollout.replace(rewards=r)
    grouped = r.reshape(-1, k).astype(np.float64)
    want = (k / (k - 1)) * (grouped - grouped.mean(1, keepdims=True))
    np.testing.assert_allclose(per_row(rollout, RLOO.Config()), want.reshape(-1), rtol=1e-4, atol=1e-3)
    # ... which is the reward minus the mean of the other K − 1.
    loo = [r[i] - np.delete(grouped[i // k], i % k).mean() for i in range(B)]
    np.testing.assert_allclose(per_row(rollout, RLOO.Config()), loo, rtol=1e-4, atol=1e-3)


@given(rewards, st.floats(-100, 100))
def test_zero_mean_and_shift_invariant_per_group(r, shift):
    rollout, _ = random_batch(0, B, T, 4)
    a = per_row(rollout.replace(rewards=r), RLOO.Config()).reshape(-1, 4)
    b = per_row(rollout.replace(rewards=r + shift), RLOO.Config()).reshape(-1, 4)
    assert np.all(np.abs(a.sum(1)) <= 1e-4 * (1 + np.abs(a).max(1)))
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16))
def test_equals_group_mean_reinforce_scaled_by_k_over_k_minus_1(seed):
    """RLOO is REINFORCE with the group-mean baseline, rescaled by K/(K − 1)."""
    k = 4
    rollout, stats = random_batch(seed, B, T, k)
    _, _, rloo = loss_and_grad(RLOO, RLOO.Config(), stats, rollout)
    reinforce = get_algorithm("reinforce")
    _, _, base = loss_and_grad(reinforce, reinforce.Config(), stats, rollout)
    np.testing.assert_allclose(rloo.logprobs, k / (k - 1) * np.asarray(base.logprobs), rtol=1e-4, atol=1e-7)


def test_kl_penalty_is_folded_into_the_reward():
    rollout, _ = random_batch(0, B, T, 4)
    cfg = RLOO.Config(kl_coef=0.1)
    kl = np.where(rollout.loss_mask, rollout.behaviour_logprobs - rollout.ref_logprobs, 0).sum(1)
    penalised = np.asarray(rollout.rewards) - 0.1 * kl
    grouped = penalised.reshape(-1, 4)
    want = (4 / 3) * (grouped - grouped.mean(1, keepdims=True))
    np.testing.assert_allclose(per_row(rollout, cfg), want.reshape(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_other_kl_estimators_fold_their_estimate_into_the_reward(estimator):
    rollout, _ = random_batch(1, B, T, 4)
    cfg = RLOO.Config(kl_coef=0.2, kl_estimator=estimator)
    kl = np.where(rollout.loss_mask, ops.kl_estimate(rollout.behaviour_logprobs, rollout.ref_logprobs, estimator), 0)
    grouped = (np.asarray(rollout.rewards) - 0.2 * kl.sum(1)).reshape(-1, 4)
    want = (4 / 3) * (grouped - grouped.mean(1, keepdims=True))
    np.testing.assert_allclose(per_row(rollout, cfg), want.reshape(-1), rtol=1e-4, atol=1e-4)


def test_config_defaults_needs_and_rejected_values():
    cfg = RLOO.Config()
    assert (cfg.kl_coef, cfg.kl_estimator, cfg.aggregation) == (0.0, "k1", "seq-mean-token-sum")
    assert RLOO.required(cfg) & {"ref_logprobs", "entropy"} == set()
    assert "ref_logprobs" in RLOO.required(RLOO.Config(kl_coef=0.05))
    with pytest.raises(ValueError, match="kl-coef must be >= 0"):
        RLOO.Config(kl_coef=-0.05)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        RLOO.Config(aggregation="mean")
