"""BNPO's invariants (Xiao, Zhang and Cao 2025, arXiv:2506.02864)."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms import bnpo
from rlzoo.testing import loss_and_grad, off_policy, on_policy, random_batch

BNPO = get_algorithm("bnpo")  # the estimator paired with grpo's loss
K, B, T = 4, 16, 10
binary = st.lists(st.integers(0, 1), min_size=B, max_size=B).map(lambda v: np.asarray(v, np.float32))


def _rollout(rewards, seed=0):
    rollout, _ = random_batch(seed, B, T, K)
    return rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))


def _per_row(rollout, cfg):
    adv, _ = bnpo.advantages(rollout, cfg, ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


@given(binary)
def test_zero_mean_per_group_and_zero_on_all_equal_groups(r):
    adv = _per_row(_rollout(r), bnpo.Config()).reshape(-1, K)
    scale = 1 + np.abs(adv).max(1)
    assert np.all(np.abs(adv.sum(1)) <= 1e-4 * scale)
    equal = np.ptp(r.reshape(-1, K), axis=1) == 0
    assert np.all(adv[equal] == 0)


@given(binary)
def test_adaptive_normaliser_is_the_method_of_moments_rule(r):
    """Naive re-derivation: Beta(a, b) fitted to the per-prompt success rates by
    moments, α = max(1 + a/3, 1), β = max(1 + b/3, 1), A = (R − p) / f(p; α, β)."""
    p = r.reshape(-1, K).mean(1).astype(np.float64)
    mean, var = p.mean(), p.var(ddof=1)
    if var > 0:
        scale = mean * (1 - mean) / var - 1
        alpha, beta = max(1 + scale * mean / 3, 1), max(1 + scale * (1 - mean) / 3, 1)
    else:
        alpha = beta = 1.0
    with np.errstate(divide="ignore"):
        inverse = np.minimum(1 / scipy.stats.beta.pdf(p, alpha, beta), 1e6)
    want = (inverse[:, None] * (r.reshape(-1, K) - p[:, None])).reshape(-1)
    np.testing.assert_allclose(_per_row(_rollout(r), bnpo.Config()), want, rtol=2e-3, atol=1e-5)


@given(st.integers(0, 2**16))
def test_alpha_beta_one_is_reinforce_with_baseline_p(seed):
    """f(p; 1, 1) = 1, so A = R − p and the on-policy gradient is REINFORCE's with
    the group-mean baseline (same per-response token-sum aggregation)."""
    rollout, stats = random_batch(seed, B, T, K, binary_rewards=True)
    rollout = on_policy(rollout, stats)
    cfg = BNPO.Config(beta_params=(1.0, 1.0))
    adv, _ = BNPO.advantages(rollout, cfg, ())
    loss, metrics, grads = loss_and_grad(BNPO, cfg, stats, rollout)
    reinforce = get_algorithm("reinforce")
    _, _, want = loss_and_grad(reinforce, reinforce.Config(), stats, rollout)
    np.testing.assert_allclose(grads.logprobs, want.logprobs, rtol=1e-5, atol=1e-7)
    # At ratio 1 the surrogate's value is −Σ w_t A_t (nothing clipped).
    weights = ops.token_weights(rollout, "seq-mean-token-sum")
    np.testing.assert_allclose(loss, -np.sum(np.asarray(weights * adv)), rtol=1e-5, atol=1e-6)
    assert metrics["clip_frac"] == 0


@given(binary)
def test_alpha_beta_three_halves_is_grpo_times_pi_over_8(r):
    """f(p; 3/2, 3/2) = (8/π)√(p(1 − p)), the population std of binary rewards."""
    rollout = _rollout(r)
    got = _per_row(rollout, bnpo.Config(beta_params=(1.5, 1.5)))
    grpo = get_algorithm("grpo")
    adv, _ = grpo.advantages(rollout, grpo.Config(std_eps=1e-12, std_ddof=0), ())
    want = np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)
    np.testing.assert_allclose(got, np.pi / 8 * want, rtol=1e-4, atol=1e-6)


@given(binary, st.floats(-5, 5), st.floats(0.5, 20))
def test_rewards_on_any_scale_with_matching_bounds(r, low, width):
    """The affine map to [0, 1] makes BNPO indifferent to the reward scale."""
    moved = _rollout(low + width * r)
    cfg = bnpo.Config(reward_min=low, reward_max=low + width)
    np.testing.assert_allclose(_per_row(moved, cfg), _per_row(_rollout(r), bnpo.Config()), rtol=2e-3, atol=1e-4)


@given(binary, binary)
def test_decomposition_averages_per_component_advantages(r1, r2):
    rollout = _rollout(r1).replace(reward_components=jnp.stack([r1, r2], axis=1))
    got = _per_row(rollout, bnpo.Config(decompose=True))
    want = (_per_row(_rollout(r1), bnpo.Config()) + _per_row(_rollout(r2), bnpo.Config())) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@given(binary, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(r, seed):
    order = np.concatenate([g * K + np.random.default_rng(seed + g).permutation(K) for g in range(B // K)])
    rollout = _rollout(r)
    np.testing.assert_allclose(
        _per_row(rollout.select_rows(order), bnpo.Config()), _per_row(rollout, bnpo.Config())[order], rtol=1e-5, atol=1e-6
    )


@given(st.integers(0, 2**16), st.floats(0.0, 0.6))
def test_paired_loss_is_the_official_recipe_clipped_surrogate(seed, scale):
    """get_algorithm("bnpo") is grpo's loss at the official run.sh settings: ε_low = 0.2,
    ε_high = 0.28, dual clip c = 10, seq-mean-token-sum, no KL, on the BNPO advantages."""
    rollout, stats = off_policy(seed, scale, batch=B, length=T, group_size=K)
    cfg = BNPO.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip, cfg.kl_coef, cfg.aggregation) == (
        0.2, 0.28, 10.0, 0.0, "seq-mean-token-sum")
    adv, _ = bnpo.advantages(rollout, bnpo.Config(), ())
    loss, metrics, _ = loss_and_grad(BNPO, cfg, stats, rollout)
    want, want_metrics = ops.clipped_policy_loss(stats, rollout, adv, "seq-mean-token-sum",
                                                 eps_low=0.2, eps_high=0.28, dual_clip=10.0)
    np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["clip_frac"], want_metrics["clip_frac"], rtol=1e-6)
    assert BNPO.required(cfg) & {"ref_logprobs", "entropy", "reward_components"} == set()
    assert "reward_components" in BNPO.required(BNPO.Config(decompose=True))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="reward-max must be > --reward-min"):
        bnpo.Config(reward_min=1.0, reward_max=1.0)
    with pytest.raises(ValueError, match="beta-params must be two positive"):
        bnpo.Config(beta_params=(0.0, 1.0))
    with pytest.raises(ValueError, match="max-inverse-density must be > 0"):
        bnpo.Config(max_inverse_density=0.0)
    with pytest.raises(ValueError, match="dual-clip must be > 1"):
        BNPO.Config(dual_clip=0.5)
