"""ADORA's invariants (Ren et al. 2026, arXiv:2602.10019; released Logic-RL code)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import adora
from rlzoo.testing import loss_and_grad, random_batch

ADORA = get_algorithm("adora")  # the estimator paired with grpo's loss
K, B, T = 4, 16, 12
binary = st.lists(st.integers(0, 1), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


def _rollout(r, seed=0):
    rollout, _ = random_batch(seed, B, T, K)
    return rollout.replace(rewards=jnp.asarray(r, jnp.float32))


def _per_row(rollout, cfg):
    adv, _ = adora.advantages(rollout, cfg, ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


@given(binary, st.integers(0, 2**16), st.sampled_from([None, 6]))
def test_matches_the_length_criterion_loop(r, seed, threshold):
    """Naive re-derivation: a group keeps weight 1 iff its longest correct response is
    longer than the mean length of its (short enough) incorrect ones, else λ."""
    rollout = _rollout(r, seed)
    cfg = adora.Config(max_length_threshold=threshold)
    lengths = np.asarray(rollout.loss_mask).sum(1).reshape(-1, K)
    want = []
    for g, rewards in enumerate(r.reshape(-1, K).astype(np.float64)):
        pos = rewards > 0.5
        neg = ~pos & (lengths[g] < (np.inf if threshold is None else threshold))
        longest = lengths[g][pos].max() if pos.any() else -np.inf
        mean_neg = lengths[g][neg].mean() if neg.any() else -np.inf
        weight = 1.0 if longest > mean_neg else cfg.weight_disadvantageous
        z = (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-6)
        want.append(weight * z)
    np.testing.assert_allclose(_per_row(rollout, cfg), np.concatenate(want), rtol=1e-5, atol=1e-6)


@given(st.integers(0, 2**16))
def test_unit_weights_are_grpo(seed):
    rollout, stats = random_batch(seed, B, T, K, binary_rewards=True)
    cfg = ADORA.Config(weight_disadvantageous=1.0)
    loss, _, grads = loss_and_grad(ADORA, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    want_loss, _, want = loss_and_grad(grpo, grpo.Config(kl_coef=0.001, aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-6, atol=1e-8)


@given(binary, st.floats(0.01, 5.0))
def test_reweighting_keeps_signs_zero_means_and_equal_groups(r, weight):
    rollout = _rollout(r)
    adv = _per_row(rollout, adora.Config(weight_disadvantageous=weight)).reshape(-1, K)
    grpo = get_algorithm("grpo")
    base, _ = grpo.advantages(rollout, grpo.Config(), ())
    base = (np.asarray(base).sum(1) / np.asarray(rollout.loss_mask).sum(1)).reshape(-1, K)
    assert np.all(np.sign(adv) == np.sign(base))
    assert np.all(np.abs(adv.sum(1)) <= 1e-4 * (1 + np.abs(adv).max(1)))
    ratios = np.where(base != 0, adv / np.where(base != 0, base, 1), np.nan)
    for g in range(len(adv)):
        seen = ratios[g][~np.isnan(ratios[g])]
        if len(seen):
            assert np.allclose(seen, seen[0], rtol=1e-4) and (np.isclose(seen[0], 1) or np.isclose(seen[0], weight))


@given(binary, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(r, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout = _rollout(r)
    np.testing.assert_allclose(_per_row(rollout.select_rows(order), adora.Config()),
                               _per_row(rollout, adora.Config())[order], rtol=1e-5, atol=1e-6)


def test_estimator_only_record_pairs_grpo_with_the_released_settings():
    """The released ADORA.sh loss: GRPO's clip ε = 0.2 (symmetric), k3 KL with β = 0.001, token mean."""
    assert ADORA.Config() == ADORA.make_config()
    cfg = ADORA.Config()
    assert (cfg.kl_coef, cfg.kl_estimator, cfg.aggregation) == (0.001, "k3", "token-mean")
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip) == (0.2, None, None)
    assert cfg.weight_disadvantageous == 0.1 and cfg.std_eps == 1e-6
    assert "ref_logprobs" in ADORA.required(cfg)
    assert "ref_logprobs" not in ADORA.required(ADORA.Config(kl_coef=0.0))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="weight-disadvantageous must be >= 0"):
        adora.Config(weight_disadvantageous=-0.5)
    with pytest.raises(ValueError, match="max-length-threshold must be > 0"):
        adora.Config(max_length_threshold=0)
    with pytest.raises(ValueError, match="clip-eps-low must be >= 0"):
        ADORA.Config(clip_eps_low=-1.0)
