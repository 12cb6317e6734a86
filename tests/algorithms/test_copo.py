"""COPO's invariants (Han et al. 2025, arXiv:2508.04138)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.copo import local_part
from rlzoo.testing import loss_and_grad, random_batch

COPO = get_algorithm("copo")
K, B, T = 4, 12, 10
binary = st.lists(st.integers(0, 1), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))
answers = st.lists(st.integers(-1, 3), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.int32))


def _batch(r, keys=None, seed=0):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(r, jnp.float32))
    if keys is not None:
        rollout = rollout.replace(answer_ids=jnp.asarray(keys, jnp.int32))
    return rollout, stats


def _per_row(adv, rollout):
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


def _naive_parts(r, keys, cfg):
    """(A_glb, A_loc, w) per row, by a loop over groups."""
    g = r.reshape(-1, K).astype(np.float64)
    local = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + cfg.std_eps)
    p = g.mean(1)
    glob = np.repeat((p - p.mean()) / (p.std(ddof=1) + cfg.std_eps), K)
    entropy = []
    for row in keys.reshape(-1, K):
        _, counts = np.unique(row, return_counts=True)
        q = counts / K
        entropy.append(-(q * np.log2(q)).sum())
    w = 1 / (1 + np.exp(-cfg.blend_k * (np.repeat(entropy, K) - cfg.blend_b)))
    if cfg.zero_reward_global_only:
        w = np.where(r != 0, w, 0.0)
    return glob, local.reshape(-1), w


def _clip_loss(ratio, adv, eps=0.2, dual=3.0):
    loss = np.maximum(-ratio * adv, -np.clip(ratio, 1 - eps, 1 + eps) * adv)
    return np.where(adv < 0, np.minimum(loss, -dual * adv), loss)


@given(binary, answers, st.integers(0, 2**16))
def test_loss_is_the_entropy_blend_of_two_clipped_losses(r, keys, seed):
    """The official per-token loss (1 − w)ℓ_clip(A_glb) + w ℓ_clip(A_loc), computed
    directly, with clipping active and signs of the two advantages disagreeing."""
    rollout, stats = _batch(r, keys, seed)
    cfg = COPO.Config()
    loss, _, _ = loss_and_grad(COPO, cfg, stats, rollout)
    glob, local, w = _naive_parts(r, keys, cfg)
    mask = np.asarray(rollout.loss_mask)
    ratio = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs))
    per_token = (1 - w)[:, None] * _clip_loss(ratio, glob[:, None]) + w[:, None] * _clip_loss(ratio, local[:, None])
    want = np.mean(np.where(mask, per_token, 0).sum(1) / mask.sum(1))
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-6)
    adv, _ = COPO.advantages(rollout, cfg, ())
    np.testing.assert_allclose(_per_row(adv, rollout), (1 - w) * glob + w * local, rtol=1e-4, atol=1e-5)


@given(binary)
def test_all_equal_group_learns_from_the_global_term(r):
    r = r.copy()
    r[:K] = 1.0  # group 0 all correct: GRPO's advantage is 0 there
    r[K:2 * K] = [1, 0, 0, 0]
    rollout, _ = _batch(r)
    adv = _per_row(COPO.advantages(rollout, COPO.Config(), ())[0], rollout)
    grpo = get_algorithm("grpo")
    base = _per_row(grpo.advantages(rollout, grpo.Config(), ())[0], rollout)
    assert np.all(base[:K] == 0)
    assert np.all(adv[:K] > 0)  # its success rate is the batch's highest


@given(st.integers(0, K - 1))
def test_blend_weight_grows_with_answer_entropy(distinct):
    """Groups whose answers are more varied lean more on the local (GRPO) term."""
    keys = np.zeros(B, np.int32)
    r = np.tile(np.array([1, 0, 1, 0], np.float32), B // K)
    keys[:K] = np.minimum(np.arange(K), distinct)        # entropy grows with `distinct`
    keys[K:2 * K] = np.minimum(np.arange(K), distinct + 1 if distinct < K - 1 else distinct)
    rollout, stats = _batch(r, keys)
    cfg = COPO.Config(zero_reward_global_only=False)
    _, metrics, _ = loss_and_grad(COPO, cfg, stats, rollout)
    glob, local, w = _naive_parts(r, keys, cfg)
    assert np.all((0 <= w) & (w <= 1))
    assert w[K] >= w[0]
    assert 0 <= metrics["blend_weight"] <= 1


@given(binary, st.floats(-10, 10))
def test_global_advantage_has_zero_mean_and_batch_shift_invariance(r, shift):
    cfg = COPO.Config(zero_reward_global_only=False, blend_b=50.0)  # w ≈ 0: global only
    rollout, _ = _batch(r)
    a = _per_row(COPO.advantages(rollout, cfg, ())[0], rollout)
    moved, _ = _batch(r + shift)
    b = _per_row(COPO.advantages(moved, cfg, ())[0], moved)
    assert abs(a.reshape(-1, K)[:, 0].sum()) < 1e-4
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@given(st.integers(0, 2**16))
def test_all_local_weight_is_grpo_with_dual_clip(seed):
    rollout, stats = random_batch(seed, B, T, K, binary_rewards=True)
    cfg = COPO.Config(blend_b=-1e3, zero_reward_global_only=False)
    loss, _, grads = loss_and_grad(COPO, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    want_loss, _, want = loss_and_grad(grpo, grpo.Config(kl_coef=0.0, dual_clip=3.0), stats, rollout)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-5, atol=1e-8)


@given(binary, answers, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(r, keys, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout, _ = _batch(r, keys)
    cfg = COPO.Config()
    a = _per_row(COPO.advantages(rollout, cfg, ())[0], rollout)
    moved = rollout.select_rows(order)
    np.testing.assert_allclose(_per_row(COPO.advantages(moved, cfg, ())[0], moved), a[order], rtol=1e-5, atol=1e-6)


@given(st.lists(st.integers(0, 8), min_size=2, max_size=2), st.integers(0, 2**16))
def test_reward_key_fallback_caps_the_local_weight_at_one_half(correct, seed):
    """With the reward as the key (`answer_key="reward"`): for 0/1 rewards H_g is the binary entropy
    h(m/K) ≤ 1 bit of the correct count m, so a correct row's local weight is σ(k(h − b)) ≤
    σ(k(1 − b)) = 0.5 at the released k = 5, b = 1 (≈ 0.09 for 1 correct of 8), a wrong row's 0;
    answer ids that split the wrong answers can only raise H and the weight."""
    k = 8
    rng = np.random.default_rng(seed)
    r = np.concatenate([rng.permutation(np.arange(k) < m) for m in correct]).astype(np.float32)
    rollout, _ = random_batch(seed, 2 * k, T, k)
    rollout = rollout.replace(rewards=jnp.asarray(r))
    cfg = COPO.Config(answer_key="reward")
    _, w, _ = local_part(rollout, cfg)
    p = np.repeat(np.asarray(correct) / k, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.nan_to_num(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    want = np.where(r != 0, 1 / (1 + np.exp(-cfg.blend_k * (h - cfg.blend_b))), 0.0)
    np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(w) <= 0.5 + 1e-6)
    if correct[0] == 1:
        assert abs(float(w[r[:k].argmax()]) - 0.0928) < 1e-3
    distinct = jnp.asarray(np.where(r != 0, 0, 1 + np.arange(2 * k)), jnp.int32)
    _, w_split, _ = local_part(rollout.replace(answer_ids=distinct), COPO.Config())
    assert np.all(np.asarray(w_split) >= np.asarray(w) - 1e-6)


def test_config_defaults_and_rejected_values():
    """The released run_copo.sh loss: ε = 0.2 both sides, dual clip c = 3, seq-mean-token-mean, no KL."""
    cfg = COPO.Config()
    assert (cfg.clip_bounds, cfg.dual_clip, cfg.aggregation, cfg.kl_coef) == ((0.2, 0.2), 3.0, "seq-mean-token-mean", 0.0)
    assert COPO.required(cfg) & {"ref_logprobs", "entropy"} == set()
    assert "ref_logprobs" in COPO.required(COPO.Config(kl_coef=0.1))
    with pytest.raises(ValueError, match="clip-eps-low must be >= 0"):
        COPO.Config(clip_eps_low=-1.0)
    with pytest.raises(ValueError, match="dual-clip must be > 1"):
        COPO.Config(dual_clip=1.0)
    with pytest.raises(ValueError, match="answer-key must be one of"):
        COPO.Config(answer_key="answers")
