"""GRPO pass@k's invariants (Tang et al. 2025, arXiv:2503.19595; verl grpo_passk)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms import grpo_passk
from rlzoo.testing import loss_and_grad, random_batch

PASSK = get_algorithm("grpo_passk")  # the estimator paired with grpo's loss
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10
G = B // K
# Small integers: ties for the best reward are frequent.
rewards_strategy = st.lists(st.integers(0, 3).map(float), min_size=B, max_size=B)


def row_advantage(rollout, cfg):
    adv, _ = grpo_passk.advantages(rollout, cfg, ())
    return np.asarray(ops.sequence_mean(adv, rollout.loss_mask), np.float64)


@given(rewards_strategy)
def test_advantage_is_best_minus_best_of_the_others(rewards):
    """Â_i = max_j R_j − max_{j≠i} R_j (by a loop): non-negative, non-zero only for a unique
    best sample, where it is r_max − r_2nd; ties for the best give 0 to everyone."""
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))
    got = row_advantage(rollout, grpo_passk.Config(norm_by_std=False))
    for g in range(G):
        group = rewards[g * K:(g + 1) * K]
        for i in range(K):
            others = group[:i] + group[i + 1:]
            assert got[g * K + i] == pytest.approx(max(group) - max(others), abs=1e-6)
        best = [i for i in range(K) if group[i] == max(group)]
        nonzero = np.flatnonzero(got[g * K:(g + 1) * K])
        if len(best) > 1:
            assert nonzero.size == 0
        else:
            assert set(nonzero) <= set(best)
    assert np.all(got >= 0)


@given(rewards_strategy, st.permutations(range(K)))
def test_permuting_a_group_permutes_its_advantages_even_with_ties(rewards, order):
    rollout, _ = random_batch(1, B, T, K)
    rewards = np.asarray(rewards, np.float32)
    perm = np.concatenate([g * K + np.asarray(order) for g in range(G)])
    for cfg in (grpo_passk.Config(), grpo_passk.Config(norm_by_std=False)):
        base = row_advantage(rollout.replace(rewards=jnp.asarray(rewards)), cfg)
        # Same rollout rows, rewards permuted within each group.
        moved = row_advantage(rollout.replace(rewards=jnp.asarray(rewards[perm])), cfg)
        np.testing.assert_allclose(moved, base[perm], rtol=1e-6, atol=1e-6)


@given(st.lists(st.floats(-5, 5, width=32), min_size=B, max_size=B))
def test_std_normalisation_matches_verl(rewards):
    """verl divides r_max − r_2nd by the group std (ddof 1) + ε, for the best row only."""
    rollout, _ = random_batch(2, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))
    got = row_advantage(rollout, grpo_passk.Config())
    expected = np.zeros(B)
    for g in range(G):
        group = np.asarray(rewards[g * K:(g + 1) * K], np.float64)
        top = np.sort(group)[::-1]
        i = int(np.argmax(group))
        expected[g * K + i] = (top[0] - top[1]) / (group.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_rejects_single_sample_groups():
    rollout, _ = random_batch(0, B, T, 1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        grpo_passk.advantages(rollout, grpo_passk.Config(), ())


@given(st.integers(0, 2**16))
def test_loss_is_grpo_clipped_surrogate_on_passk_advantages(seed):
    """The policy loss is GRPO's (β = 0, token-mean) applied to the pass@k advantages."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=(1,))
    cfg = PASSK.Config()
    adv, _ = PASSK.advantages(rollout, cfg, ())
    loss, _, grads = loss_and_grad(PASSK, cfg, stats, rollout)
    grpo_cfg = GRPO.Config(kl_coef=0.0, aggregation="token-mean")
    ref_loss, _, ref_grads = loss_and_grad(GRPO, grpo_cfg, stats, rollout, adv=adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-9)


def test_paired_defaults_and_rejected_values():
    """verl's defaults for the paired loss: ε = 0.2 both sides, token mean, no KL."""
    cfg = PASSK.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip) == (0.2, None, None)
    assert (cfg.aggregation, cfg.kl_coef) == ("token-mean", 0.0)
    assert (cfg.norm_by_std, cfg.std_eps, cfg.std_ddof) == (True, 1e-6, 1)
    with pytest.raises(ValueError, match="std-ddof must be >= 0"):
        grpo_passk.Config(std_ddof=-1)
    with pytest.raises(ValueError, match="clip-eps-high must be >= 0"):
        PASSK.Config(clip_eps_high=-0.1)
