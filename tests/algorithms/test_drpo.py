"""DRPO's invariants (Li, Chen, Lin and Yang 2025, arXiv:2510.04474)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

DRPO = get_algorithm("drpo")
K, B, T = 4, 12, 10
binary = st.lists(st.integers(0, 1), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


def _batch(rewards, seed=0):
    rollout, stats = random_batch(seed, B, T, K)
    return rollout.replace(rewards=jnp.asarray(rewards)), stats


def _per_row(targets, rollout):
    return np.asarray(targets["advantages"]).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


@given(binary, st.integers(0, 2**16))
def test_positive_weights_are_a_length_softmax_over_correct_rows(r, seed):
    """Naive re-derivation: ŵ_i ∝ exp((1 − |y_i|/T)/λ) over the correct rows of
    groups with both outcomes; every correct row gets a positive weight; the
    weights sum to K on the correct rows and −K on the incorrect ones."""
    rollout, _ = _batch(r, seed)
    cfg = DRPO.Config()
    adv = _per_row(DRPO.advantages(rollout, cfg, ())[0], rollout).reshape(-1, K)
    lengths = np.asarray(rollout.loss_mask).sum(1).reshape(-1, K)
    for g, rewards in enumerate(r.reshape(-1, K)):
        correct = rewards == 1
        if correct.all() or not correct.any():
            assert np.all(adv[g] == 0)
            continue
        w = np.exp((1 - lengths[g][correct] / T) / cfg.lam)
        np.testing.assert_allclose(adv[g][correct], K * w / w.sum(), rtol=1e-4)
        assert np.all(adv[g][correct] > 0) and np.all(adv[g][~correct] < 0)
        np.testing.assert_allclose(adv[g][~correct].sum(), -K, rtol=1e-5)


@given(binary)
def test_large_lambda_gives_uniform_positive_weights(r):
    rollout, _ = _batch(r)
    adv = _per_row(DRPO.advantages(rollout, DRPO.Config(lam=1e6, tau=1e6), ())[0], rollout).reshape(-1, K)
    for g, rewards in enumerate(r.reshape(-1, K)):
        correct = rewards == 1
        if 0 < correct.sum() < K:
            np.testing.assert_allclose(adv[g][correct], K / correct.sum(), rtol=1e-4)
            np.testing.assert_allclose(adv[g][~correct], -K / (~correct).sum(), rtol=1e-4)


@given(binary, st.integers(0, 2**16))
def test_on_policy_gradient_is_reinforce_on_the_reported_advantage(r, seed):
    """At π_θ = π_old the KL term is 0 with 0 gradient, and ∇J puts ŵ_i on the correct
    rows' scores and softmax(s/τ) on the incorrect ones: REINFORCE on `adv`."""
    rollout, stats = _batch(r, seed)
    rollout = on_policy(rollout, stats)
    adv, _ = DRPO.advantages(rollout, DRPO.Config(), ())
    _, metrics, grads = loss_and_grad(DRPO, DRPO.Config(), stats, rollout)
    want = reinforce_gradient(rollout, adv["advantages"], "seq-mean-token-mean")
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-4, atol=1e-7)
    assert abs(metrics["ppo_kl"]) < 1e-7


@given(binary, st.integers(0, 2**16))
def test_loss_value_matches_a_direct_computation(r, seed):
    """−(1/G) Σ_g [Σ ŵ s − τ log mean exp(s_neg/τ)] + β[KL̄ − δ]₊ KL̄, with k1 KL̄ = mean(old − new)."""
    rollout, stats = _batch(r, seed)
    cfg = DRPO.Config(kl_delta=1e-3)
    loss, metrics, _ = loss_and_grad(DRPO, cfg, stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    logp, old = np.asarray(stats.logprobs, np.float64), np.asarray(rollout.behaviour_logprobs, np.float64)
    s = (np.where(mask, logp, 0).sum(1) / mask.sum(1)).reshape(-1, K)
    lengths = mask.sum(1).reshape(-1, K)
    total = 0.0
    for g, rewards in enumerate(r.reshape(-1, K)):
        c = rewards == 1
        if c.all() or not c.any():
            continue
        w = np.exp((1 - lengths[g][c] / T) / cfg.lam)
        total += np.sum(w / w.sum() * s[g][c]) - cfg.tau * np.log(np.mean(np.exp(s[g][~c] / cfg.tau)))
    kl = (old - logp)[mask].mean()
    want = -total / (B // K) + cfg.kl_beta * max(kl - cfg.kl_delta, 0.0) * kl
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["ppo_kl"], kl, rtol=1e-4, atol=1e-7)


@given(st.lists(st.floats(-3, 3, width=32), min_size=B, max_size=B), binary)
def test_length_reward_can_come_from_a_reward_component(length_reward, r):
    rollout, _ = _batch(r)
    components = np.stack([np.zeros(B, np.float32), np.asarray(length_reward, np.float32)], axis=1)
    rollout = rollout.replace(reward_components=jnp.asarray(components))
    cfg = DRPO.Config(length_component=1, lam=0.5)
    adv = _per_row(DRPO.advantages(rollout, cfg, ())[0], rollout).reshape(-1, K)
    lr = np.asarray(length_reward, np.float64).reshape(-1, K)
    for g, rewards in enumerate(r.reshape(-1, K)):
        c = rewards == 1
        if 0 < c.sum() < K:
            w = np.exp((lr[g][c] - lr[g][c].max()) / cfg.lam)
            np.testing.assert_allclose(adv[g][c], K * w / w.sum(), rtol=1e-4, atol=1e-6)


@given(binary, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages_and_keeps_the_loss(r, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout, stats = _batch(r, seed)
    adv, _ = DRPO.advantages(rollout, DRPO.Config(), ())
    moved = rollout.select_rows(order)
    moved_adv, _ = DRPO.advantages(moved, DRPO.Config(), ())
    for key in adv:
        np.testing.assert_allclose(np.asarray(moved_adv[key]), np.asarray(adv[key])[order], rtol=1e-5, atol=1e-6)
    loss, _, _ = loss_and_grad(DRPO, DRPO.Config(), stats, rollout)
    moved_loss, _, _ = loss_and_grad(DRPO, DRPO.Config(), stats.replace(
        logprobs=stats.logprobs[order], entropy=stats.entropy[order]), moved)
    np.testing.assert_allclose(moved_loss, loss, rtol=1e-5, atol=1e-6)


@given(binary, st.integers(0, 2**16))
def test_microbatches_sum_to_the_batch_loss_without_the_kl_penalty(r, seed):
    """The exemption is only the KL coefficient: with β_KL = 0 the DisCO part splits exactly."""
    rollout, stats = _batch(r, seed)
    cfg = DRPO.Config(kl_beta=0.0)
    adv, _ = DRPO.advantages(rollout, cfg, ())
    loss, _, grads = loss_and_grad(DRPO, cfg, stats, rollout)
    rows = B // 3
    parts = [
        loss_and_grad(DRPO, cfg, jax.tree.map(lambda x: x[i * rows:(i + 1) * rows], stats),
                      micro, adv=jax.tree.map(lambda x: x[i * rows:(i + 1) * rows], adv))
        for i, micro in enumerate(rollout.microbatches(3))
    ]
    np.testing.assert_allclose(sum(float(p[0]) for p in parts), loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p[2].logprobs for p in parts]), grads.logprobs, rtol=1e-5, atol=1e-7)


@given(binary, st.integers(0, 2**16))
def test_targets_carry_the_positive_weights_and_the_negative_rows(r, seed):
    """"positive_weights" is K·ŵ on the correct rows of mixed groups (0 elsewhere), the
    positive part of "advantages"; "negative" marks the rows whose advantage is < 0."""
    rollout, _ = _batch(r, seed)
    targets, _ = DRPO.advantages(rollout, DRPO.Config(), ())
    per_row = _per_row(targets, rollout)
    np.testing.assert_allclose(targets["positive_weights"], np.maximum(per_row, 0.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(targets["negative"], per_row < 0)
    assert targets["positive_weights"].shape == targets["negative"].shape == (B,)


def test_declarations_and_rejected_values():
    assert DRPO.reduction("ppo_kl") == "sum" and DRPO.reduction("constraint_active") == "mean"
    assert DRPO.required(DRPO.Config()) == frozenset()
    assert DRPO.required(DRPO.Config(length_component=0)) == {"reward_components"}
    with pytest.raises(ValueError, match="tau must be > 0"):
        DRPO.Config(tau=0.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        DRPO.Config(lam=-1.0)
    with pytest.raises(ValueError, match="kl-beta must be >= 0"):
        DRPO.Config(kl_beta=-1.0)
