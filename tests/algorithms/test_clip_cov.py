"""Clip-Cov's invariants (Cui et al. 2025, arXiv:2505.22617): fraction 0 is
GRPO; otherwise exactly k = max(⌊rN⌋, 1) high-covariance, unclipped tokens
lose their gradient and every other token keeps GRPO's; the draw is a
deterministic, row-order-free function of the tokens and the step."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, random_batch

CLIP_COV = get_algorithm("clip_cov")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
GRPO_CFG = GRPO.Config(kl_coef=0.0, aggregation="token-mean")

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _adv(rollout):
    return GRPO.advantages(rollout, GRPO_CFG, ())[0]


@given(seeds)
def test_zero_fraction_is_grpo(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = CLIP_COV.Config(clip_cov_ratio=0.0)
    adv = _adv(rollout)
    loss, metrics, grads = jitted(CLIP_COV, cfg)(stats, rollout, adv, CLIP_COV.init_state(cfg))
    ref_loss, _, ref_grads = jitted(GRPO, GRPO_CFG)(stats, rollout, adv, ())
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-8)
    assert metrics["cov_drop_frac"] == 0


@given(seeds, st.sampled_from([0.02, 0.1, 0.3]), st.integers(0, 1000))
def test_exactly_k_candidates_lose_their_gradient(seed, fraction, step):
    cfg = CLIP_COV.Config(clip_cov_ratio=fraction, cov_low=-0.5, cov_high=3.0)
    rollout, stats = random_batch(seed, B, T, K)
    adv = _adv(rollout)
    state = jnp.uint32(step)
    _, _, grads = jitted(CLIP_COV, cfg)(stats, rollout, adv, state)
    _, _, ref = jitted(GRPO, GRPO_CFG)(stats, rollout, adv, ())
    # Candidates from a numpy re-derivation: valid, unclipped, ω_low < c < ω_high.
    valid = np.asarray(rollout.loss_mask) & (np.asarray(rollout.sample_weight)[:, None] > 0)
    a = np.asarray(adv, np.float64)
    lp = np.asarray(stats.logprobs, np.float64)
    cov = (a - a[valid].mean()) * (lp - lp[valid].mean())
    r = np.exp(lp - np.asarray(rollout.behaviour_logprobs, np.float64))
    clipped = ((a > 0) & (r > 1.2)) | ((a < 0) & (r < 0.8))
    candidates = valid & ~clipped & (cov > -0.5) & (cov < 3.0)
    k = max(int(np.floor(fraction * valid.sum())), 1)
    assume(np.all(np.asarray(ref.logprobs)[candidates] != 0))  # a dropped token is then visible
    dropped = np.asarray(grads.logprobs) != np.asarray(ref.logprobs)
    assert np.all(np.asarray(grads.logprobs)[dropped] == 0)
    assert not np.any(dropped & ~candidates)
    assert dropped.sum() == min(k, candidates.sum())
    np.testing.assert_allclose(np.asarray(grads.logprobs)[~dropped], np.asarray(ref.logprobs)[~dropped],
                               rtol=1e-6, atol=1e-8)


@given(seeds)
def test_draw_follows_tokens_under_row_permutations(seed):
    cfg = CLIP_COV.Config(clip_cov_ratio=0.1, cov_low=-0.5, cov_high=3.0)
    rollout, stats = random_batch(seed, B, T, K)
    order = np.random.default_rng(seed).permutation(B)
    u = ops.token_uniform(9, rollout)
    np.testing.assert_array_equal(np.asarray(ops.token_uniform(9, rollout.select_rows(order))), np.asarray(u)[order])
    assert np.all((np.asarray(u) >= 0) & (np.asarray(u) < 1))
    adv = _adv(rollout)
    _, _, grads = jitted(CLIP_COV, cfg)(stats, rollout, adv, jnp.uint32(4))
    permuted = jitted(CLIP_COV, cfg)(jax.tree.map(lambda x: x[order], stats), rollout.select_rows(order),
                                       adv[order], jnp.uint32(4))[2]
    np.testing.assert_allclose(permuted.logprobs, np.asarray(grads.logprobs)[order], rtol=1e-6, atol=1e-8)


def test_token_uniform_is_roughly_uniform_and_seed_dependent():
    rollout, _ = random_batch(0, 64, 32, 4)
    u0, u1 = np.asarray(ops.token_uniform(0, rollout)), np.asarray(ops.token_uniform(1, rollout))
    assert abs(u0.mean() - 0.5) < 0.03 and abs(np.mean(u0 < 0.25) - 0.25) < 0.03
    assert np.mean(u0 == u1) < 0.01


def test_state_counter_advances_per_batch():
    cfg = CLIP_COV.Config(seed=41)
    rollout, _ = random_batch(0, B, T, K)
    _, state = CLIP_COV.advantages(rollout, cfg, CLIP_COV.init_state(cfg))
    assert int(state) == 42


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, "clip_cov: --clip-eps-low must be >= 0.0; got -1.0"),
    ({"clip_cov_ratio": 1.5}, "clip_cov: --clip-cov-ratio must be <= 1.0"),
    ({"clip_cov_ratio": -0.1}, "clip_cov: --clip-cov-ratio must be >= 0.0"),
    ({"seed": -1}, "clip_cov: --seed must be >= 0"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CLIP_COV.Config(**overrides)
