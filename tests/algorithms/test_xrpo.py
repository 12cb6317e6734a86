"""XRPO's advantage sharpening (Bamba et al. 2025, arXiv:2510.06672) [formula inferred]."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import xrpo
from rlzoo.testing import loss_and_grad, random_batch

XRPO = get_algorithm("xrpo")  # the estimator paired with grpo's loss
K, B, T = 4, 8, 10
binary = st.lists(st.integers(0, 1), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


def _rollout(r, seed=0):
    rollout, _ = random_batch(seed, B, T, K)
    return rollout.replace(rewards=jnp.asarray(r, jnp.float32))


def _per_row(rollout, cfg):
    adv, _ = xrpo.advantages(rollout, cfg, ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


def _grpo_per_row(rollout):
    grpo = get_algorithm("grpo")
    adv, _ = grpo.advantages(rollout, grpo.Config(), ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


@given(binary, st.integers(0, 2**16), st.floats(0.0, 3.0), st.floats(0.0, 2.0))
def test_matches_the_sharpening_formula(r, seed, lam, kappa):
    """Naive re-derivation: A + 1[A > 0]·min(max(λ(1 − exp(s − s̄)), 0), κA)."""
    rollout = _rollout(r, seed)
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(rollout.behaviour_logprobs, np.float64), 0).sum(1) / mask.sum(1)
    s_bar = np.repeat(s.reshape(-1, K).mean(1), K)
    base = _grpo_per_row(rollout)
    bonus = np.minimum(np.maximum(lam * (1 - np.exp(s - s_bar)), 0), kappa * base)
    want = base + np.where(base > 0, bonus, 0)
    got = _per_row(rollout, xrpo.Config(novelty_coef=lam, bonus_cap=kappa))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@given(binary, st.integers(0, 2**16), st.floats(0.0, 3.0), st.floats(0.0, 2.0))
def test_only_positive_advantages_grow_and_never_beyond_the_cap(r, seed, lam, kappa):
    rollout = _rollout(r, seed)
    base, got = _grpo_per_row(rollout), _per_row(rollout, xrpo.Config(novelty_coef=lam, bonus_cap=kappa))
    np.testing.assert_allclose(got[base <= 0], base[base <= 0], rtol=1e-6, atol=1e-7)
    up = base > 0
    assert np.all(got[up] >= base[up] - 1e-6) and np.all(got[up] <= (1 + kappa) * base[up] + 1e-5)
    equal = np.repeat(np.ptp(r.reshape(-1, K), axis=1) == 0, K)
    assert np.all(got[equal] == 0)


@given(st.integers(0, 2**16), st.floats(-3.0, 0.0))
def test_less_likely_correct_response_gets_at_least_the_bonus(seed, drop):
    """Two correct rows with the same A: lowering one's sampling log-probs (more
    novel) never gives it a smaller sharpened advantage than the other's."""
    r = np.array([1, 1, 0, 0] * (B // K), np.float32)
    rollout = _rollout(r, seed)
    mask = np.asarray(rollout.loss_mask)
    logp = np.asarray(rollout.behaviour_logprobs).copy()
    logp[0] = np.where(mask[0], -1.0 + drop, 0.0)
    logp[1] = np.where(mask[1], -1.0, 0.0)
    got = _per_row(rollout.replace(behaviour_logprobs=jnp.asarray(logp)), xrpo.Config())
    assert got[0] >= got[1] - 1e-6


@given(st.integers(0, 2**16), st.sampled_from([(0.0, 1.0), (1.0, 0.0)]))
def test_no_sharpening_is_grpo(seed, params):
    lam, kappa = params
    rollout, stats = random_batch(seed, B, T, K, binary_rewards=True)
    cfg = XRPO.Config(novelty_coef=lam, bonus_cap=kappa)
    loss, _, grads = loss_and_grad(XRPO, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    want_loss, _, want = loss_and_grad(grpo, grpo.Config(kl_coef=0.0, aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-6, atol=1e-8)


@given(binary, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(r, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout = _rollout(r)
    np.testing.assert_allclose(_per_row(rollout.select_rows(order), xrpo.Config()),
                               _per_row(rollout, xrpo.Config())[order], rtol=1e-5, atol=1e-6)


def test_paired_defaults_and_rejected_values():
    """verl's default loss settings [inferred]: GRPO's clip ε = 0.2, no KL, token mean."""
    cfg = XRPO.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip) == (0.2, None, None)
    assert (cfg.aggregation, cfg.kl_coef, cfg.novelty_coef, cfg.bonus_cap) == ("token-mean", 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="novelty-coef must be >= 0"):
        xrpo.Config(novelty_coef=-1.0)
    with pytest.raises(ValueError, match="bonus-cap must be >= 0"):
        xrpo.Config(bonus_cap=-0.5)
    with pytest.raises(ValueError, match="clip-eps-low must be >= 0"):
        XRPO.Config(clip_eps_low=-1.0)
