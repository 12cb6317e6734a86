"""GiGPO's invariants (Feng et al. 2025, arXiv:2505.10978)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms import gigpo
from rlzoo.testing import random_batch

GIGPO = get_algorithm("gigpo")  # the estimator paired with grpo's loss
K, B, T = 4, 16, 12
seeds = st.integers(0, 2**16)
modes = st.sampled_from(["mean_norm", "mean_std_norm"])


def batch(seed, **overrides):
    rollout, _ = random_batch(seed, B, T, K)
    return rollout.replace(**overrides)


def per_turn_advantage(rollout, adv):
    """[B, N] the advantage each turn's tokens carry (all tokens of a turn share it)."""
    adv, turn_ids = np.asarray(adv), np.asarray(rollout.turn_ids)
    out = np.zeros(rollout.turn_rewards.shape, np.float32)
    for b in range(rollout.batch_size):
        for k in range(1, int(rollout.num_turns[b]) + 1):
            values = adv[b][turn_ids[b] == k]
            assert np.allclose(values, values[0]), "a turn's tokens share one advantage"
            out[b, k - 1] = values[0]
    return out


def step_advantage(rollout, cfg):
    valid = ops.turn_valid(rollout.num_turns, rollout.turn_rewards.shape[1])
    returns = ops.discounted_turn_returns(jnp.where(valid, rollout.turn_rewards, 0.0), cfg.gamma)
    return np.asarray(ops.anchor_group_advantage(returns, rollout.state_keys, valid, K,
                                                 scale=cfg.mode == "mean_std_norm", eps=cfg.eps)), np.asarray(valid)


@given(seeds, modes)
def test_without_the_step_term_it_is_grpo(seed, mode):
    """ω = 0 (episode statistics over episodes): GRPO's advantage, z-scored or
    (mean_norm) only centred, on every policy token and 0 elsewhere."""
    rollout = batch(seed)
    cfg = gigpo.Config(step_advantage_weight=0.0, mode=mode, episode_stats="episodes")
    adv, _ = gigpo.advantages(rollout, cfg, ())
    rewards = rollout.rewards
    expected = ops.group_zscore(rewards, K, eps=1e-6) if mode == "mean_std_norm" else ops.group_centre(rewards, K)
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(np.asarray(adv), np.where(mask, np.asarray(expected)[:, None], 0.0), atol=1e-5)


@given(seeds)
def test_turn_weighted_episode_statistics_follow_the_official_code(seed):
    """episode_stats="turns": the group mean counts each episode once per turn it took."""
    rollout = batch(seed)
    adv, _ = gigpo.advantages(rollout, gigpo.Config(step_advantage_weight=0.0), ())
    r = np.asarray(rollout.rewards).reshape(-1, K)
    n = np.asarray(rollout.num_turns).reshape(-1, K).astype(float)
    mean = (n * r).sum(1, keepdims=True) / np.maximum(n.sum(1, keepdims=True), 1)
    expected = (r - mean).reshape(-1)
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_allclose(np.asarray(adv), np.where(mask, expected[:, None], 0.0), atol=1e-5)


@given(seeds, st.floats(0.0, 1.0))
def test_step_advantages_sum_to_zero_in_every_anchor_group_and_vanish_alone(seed, gamma):
    rollout = batch(seed)
    cfg = gigpo.Config(gamma=gamma)
    step, valid = step_advantage(rollout, cfg)
    keys = np.asarray(rollout.state_keys)
    assert valid.sum() > 0
    for g in range(B // K):
        rows = slice(g * K, (g + 1) * K)
        k, s, ok = keys[rows][valid[rows]], step[rows][valid[rows]], valid[rows]
        for key in set(k.tolist()):
            members = s[k == key]
            assert abs(members.sum()) <= 1e-4 * (1 + np.abs(members).max())
            if len(members) == 1:
                assert members[0] == 0.0
        assert np.all(step[rows][~ok] == 0)


@given(seeds, modes)
def test_relabelling_states_changes_nothing(seed, mode):
    rollout = batch(seed)
    keys = np.asarray(rollout.state_keys)
    relabelled = np.where(keys >= 0, 1000 + (keys * 7919) % 65521, keys)
    cfg = gigpo.Config(mode=mode)
    a, _ = gigpo.advantages(rollout, cfg, ())
    b, _ = gigpo.advantages(rollout.replace(state_keys=jnp.asarray(relabelled, jnp.int32)), cfg, ())
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@given(seeds, st.floats(0.0, 2.0))
def test_one_turn_episodes_scale_grpo_by_one_plus_omega(seed, omega):
    """One turn each from the task's shared start state: the anchor group is
    the task group, G = R, so A^S = A^E and A = (1 + ω) A^E."""
    rollout = batch(seed)
    mask = np.asarray(rollout.loss_mask)
    rows_with_tokens = mask.any(1)
    rollout = rollout.replace(
        turn_ids=jnp.asarray(mask.astype(np.int32)),
        num_turns=jnp.asarray(rows_with_tokens.astype(np.int32)),
        turn_rewards=jnp.asarray(np.stack([np.asarray(rollout.rewards), np.zeros(B)], 1), jnp.float32),
        state_keys=jnp.asarray(np.stack([np.repeat(np.arange(B // K), K), -np.ones(B)], 1), jnp.int32),
    )
    if not rows_with_tokens.all():  # the start state is shared only by episodes that took a turn
        return
    cfg = gigpo.Config(step_advantage_weight=omega, episode_stats="episodes")
    adv, _ = gigpo.advantages(rollout, cfg, ())
    base = ops.group_centre(rollout.rewards, K)
    np.testing.assert_allclose(np.asarray(adv), np.where(mask, (1 + omega) * np.asarray(base)[:, None], 0.0),
                               atol=1e-4)


@given(seeds, st.floats(0.0, 1.0))
def test_each_turn_carries_episode_plus_weighted_step_advantage(seed, gamma):
    """Against a direct re-derivation: returns by a backward loop, anchor groups by dict."""
    rollout = batch(seed)
    cfg = gigpo.Config(gamma=gamma, step_advantage_weight=0.5, episode_stats="episodes")
    adv, _ = gigpo.advantages(rollout, cfg, ())
    got = per_turn_advantage(rollout, adv)
    rewards, turns = np.asarray(rollout.rewards), np.asarray(rollout.num_turns)
    turn_rewards, keys = np.asarray(rollout.turn_rewards), np.asarray(rollout.state_keys)
    returns = np.zeros_like(turn_rewards)
    for b in range(B):
        running = 0.0
        for k in reversed(range(turns[b])):
            running = turn_rewards[b, k] + gamma * running
            returns[b, k] = running
    for g in range(B // K):
        rows = range(g * K, (g + 1) * K)
        episode = rewards[g * K:(g + 1) * K] - rewards[g * K:(g + 1) * K].mean()
        anchors = {}
        for b in rows:
            for k in range(turns[b]):
                anchors.setdefault(keys[b, k], []).append(returns[b, k])
        for i, b in enumerate(rows):
            for k in range(turns[b]):
                expected = episode[i] + 0.5 * (returns[b, k] - np.mean(anchors[keys[b, k]]))
                np.testing.assert_allclose(got[b, k], expected, atol=1e-4)


def test_registry_pairs_it_with_grpo_and_the_scripts_settings():
    cfg = GIGPO.Config()
    assert GIGPO.required(cfg) >= {"turn_ids", "turn_rewards", "state_keys", "num_turns"}
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert {"clip_eps_low", "kl_coef", "step_advantage_weight", "gamma"} <= fields
    assert cfg.kl_coef == 0.01 and cfg.gamma == 0.95 and cfg.step_advantage_weight == 1.0 and cfg.mode == "mean_norm"
