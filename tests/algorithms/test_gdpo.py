"""GDPO's invariants (Liu et al. 2026, arXiv:2601.05242)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import gdpo as gdpo_module
from rlzoo.testing import loss_and_grad, random_batch

GDPO = get_algorithm("gdpo")  # the estimator paired with grpo's loss
K, B, T = 4, 8, 10
components = st.lists(st.floats(-10, 10, width=32), min_size=2 * B, max_size=2 * B).map(
    lambda v: np.asarray(v, np.float32).reshape(B, 2)
)


def _per_row(adv, rollout):
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


def _zscore(x, eps=1e-6):
    g = x.reshape(-1, K).astype(np.float64)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + eps)).reshape(-1)


@given(st.integers(0, 2**16))
def test_one_component_without_whitening_is_grpo(seed):
    """C = 1, w = 1, no batch whitening: loss and gradient are GRPO's on that reward."""
    rollout, stats = random_batch(seed, B, T, K, num_components=1)
    cfg = GDPO.Config(whiten="none")
    loss, _, grads = loss_and_grad(GDPO, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    as_grpo = rollout.replace(rewards=rollout.reward_components[:, 0])
    want_loss, _, want = loss_and_grad(grpo, grpo.Config(kl_coef=0.0, aggregation="token-mean"), stats, as_grpo)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-6, atol=1e-8)


@given(components, st.floats(0.1, 3), st.floats(0.1, 3), st.integers(0, 2**10))
def test_token_whitened_weighted_sum_of_component_zscores(c, w1, w2, seed):
    """Naive re-derivation: S = Σ_k w_k z_k per row, then (S − m)/sqrt(v + 1e-8)
    with m, v the mean and (biased) variance over all trained tokens."""
    rollout, _ = random_batch(seed, B, T, K)
    rollout = rollout.replace(reward_components=jnp.asarray(c))
    adv, _ = gdpo_module.advantages(rollout, gdpo_module.Config(component_weights=(w1, w2)), ())
    s = w1 * _zscore(c[:, 0]) + w2 * _zscore(c[:, 1])
    lengths = np.asarray(rollout.loss_mask).sum(1)
    m = np.sum(lengths * s) / lengths.sum()
    v = np.sum(lengths * (s - m) ** 2) / lengths.sum()
    np.testing.assert_allclose(_per_row(adv, rollout), (s - m) / np.sqrt(v + 1e-8), rtol=2e-4, atol=2e-4)
    assert np.all(np.asarray(adv)[~np.asarray(rollout.loss_mask)] == 0)


@given(components, st.floats(0.1, 10), st.floats(-50, 50))
def test_invariant_to_positive_affine_map_of_one_component(c, scale, shift):
    rollout, _ = random_batch(0, B, T, K)
    moved = c.copy()
    moved[:, 1] = scale * c[:, 1] + shift
    spread = np.ptp(c.reshape(-1, K, 2), axis=1).min()
    assume(spread > 1e-2)
    cfg = gdpo_module.Config(whiten="rows")
    a, _ = gdpo_module.advantages(rollout.replace(reward_components=jnp.asarray(c)), cfg, ())
    b, _ = gdpo_module.advantages(rollout.replace(reward_components=jnp.asarray(moved)), cfg, ())
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)


def test_equal_sums_with_different_composition_are_told_apart():
    """Rows 0-2 all have reward sum 1: GRPO gives them one advantage, GDPO does not."""
    rollout, _ = random_batch(0, K, T, K)
    c = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], np.float32)
    rollout = rollout.replace(reward_components=jnp.asarray(c), rewards=jnp.asarray(c.sum(1)))
    gdpo, _ = gdpo_module.advantages(rollout, gdpo_module.Config(whiten="none"), ())
    grpo = get_algorithm("grpo")
    base, _ = grpo.advantages(rollout, grpo.Config(), ())
    base, gdpo = _per_row(base, rollout), _per_row(gdpo, rollout)
    np.testing.assert_allclose(base[0], base[1], rtol=1e-6)
    assert abs(gdpo[0] - gdpo[1]) > 0.1
    # z-scores by hand: c1 = [1,0,1,0] -> ±0.866, c2 = [0,1,0,0] -> [-0.5, 1.5, -0.5, -0.5].
    np.testing.assert_allclose(gdpo, [0.366, -0.866 + 1.5, 0.366, -1.366], atol=1e-3)


@given(components)
def test_zero_mean_per_group_and_all_equal_groups_zero_without_whitening(c):
    c = c.copy()
    c[:K] = c[0]  # the first group's rewards are all equal in both components
    rollout, _ = random_batch(0, B, T, K)
    adv, _ = gdpo_module.advantages(rollout.replace(reward_components=jnp.asarray(c)), gdpo_module.Config(whiten="none"), ())
    per_row = _per_row(adv, rollout).reshape(-1, K)
    assert np.all(per_row[0] == 0)
    assert np.all(np.abs(per_row.sum(1)) <= 1e-4 * (1 + np.abs(per_row).max(1)))


@given(components, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(c, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(reward_components=jnp.asarray(c))
    cfg = gdpo_module.Config(whiten="rows")
    a, _ = gdpo_module.advantages(rollout, cfg, ())
    b, _ = gdpo_module.advantages(rollout.select_rows(order), cfg, ())
    np.testing.assert_allclose(np.asarray(b), np.asarray(a)[order], rtol=1e-5, atol=1e-6)


def test_paired_defaults_and_rejected_values():
    """The official verl run: GRPO's clip ε = 0.2, no KL loss, token mean; the components are read."""
    cfg = GDPO.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.kl_coef, cfg.aggregation) == (0.2, None, 0.0, "token-mean")
    assert GDPO.required(cfg) & {"reward_components", "ref_logprobs"} == {"reward_components"}
    with pytest.raises(ValueError, match="whiten must be one of"):
        gdpo_module.Config(whiten="batch")
    with pytest.raises(ValueError, match="std-eps must be > 0"):
        gdpo_module.Config(std_eps=0.0)
    with pytest.raises(ValueError, match="kl-coef must be >= 0"):
        GDPO.Config(kl_coef=-0.1)
