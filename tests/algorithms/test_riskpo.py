"""RiskPO's invariants (Ren et al. 2025, arXiv:2510.00911)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms import riskpo
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

RISKPO = get_algorithm("riskpo")  # the estimator paired with grpo's loss
K, B, T = 4, 16, 10
rewards = st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=B, max_size=B).map(
    lambda v: np.asarray(v, np.float32)
)


def _rollout(r, seed=0):
    rollout, _ = random_batch(seed, B, T, K)
    return rollout.replace(rewards=jnp.asarray(r, jnp.float32))


def _per_row(rollout, cfg):
    adv, _ = riskpo.advantages(rollout, cfg, ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


def _naive(r, cfg):
    """A loop over bundles and papers, with numpy's linear-interpolation quantiles."""
    eps, m = cfg.eps, cfg.bundle_size
    grouped = r.reshape(-1, K).astype(np.float64)
    out = np.zeros_like(grouped)
    for b in range(len(grouped) // m):
        prompts = grouped[b * m:(b + 1) * m]
        papers = prompts.sum(0)
        a, hi = np.quantile(papers, cfg.alpha), np.quantile(papers, cfg.beta_quantile)
        for k, x in enumerate(papers):
            g = max(x - a, 0) - max(x - hi, 0) + (a - hi if cfg.natural_baseline else 0)
            c = -max(a - x, 0)
            adv = (g / (cfg.beta_quantile - cfg.alpha + eps) + cfg.mix_weight * c / (cfg.alpha + eps)) / (1 + cfg.mix_weight)
            if cfg.normalise:
                adv /= papers.std(ddof=1) + eps
            for j in range(m):
                share = adv
                if cfg.credit == "std":
                    sd = prompts[j].std(ddof=1)
                    share = adv / ((sd if sd > 1e-3 else 1.0) + eps)
                out[b * m + j, k] = share
    return out.reshape(-1)


@given(rewards, st.sampled_from([1, 2]), st.sampled_from(["std", "uniform"]), st.booleans())
def test_matches_a_naive_bundle_loop(r, bundle, credit, natural):
    cfg = riskpo.Config(bundle_size=bundle, credit=credit, natural_baseline=natural)
    np.testing.assert_allclose(_per_row(_rollout(r), cfg), _naive(r, cfg), rtol=1e-4, atol=1e-4)


@given(rewards)
def test_natural_baseline_makes_every_advantage_non_positive(r):
    """g = clip(X, a, b) − b ≤ 0 and c = −(a − X)⁺ ≤ 0: the upper quantile is the baseline."""
    assert np.all(_per_row(_rollout(r), riskpo.Config()) <= 0)


@given(rewards)
def test_cvar_term_only_touches_responses_below_the_alpha_quantile(r):
    """With α = β the RVaR band is empty, leaving ω·CVaR_α: non-zero exactly where X < a."""
    cfg = riskpo.Config(alpha=0.25, beta_quantile=0.25, credit="uniform")
    adv = _per_row(_rollout(r), cfg).reshape(-1, K)
    below = r.reshape(-1, K) < np.quantile(r.reshape(-1, K), 0.25, axis=1, keepdims=True)
    assert np.all(adv[~below] == 0)
    assert np.all(adv[below] < 0)


@given(rewards, st.lists(st.floats(-20, 20), min_size=B // K, max_size=B // K))
def test_group_shift_invariance_and_all_equal_groups(r, shifts):
    """Quantiles and stds move with a per-group shift (bundle size 1); equal groups get 0."""
    moved = r + np.repeat(np.asarray(shifts, np.float32), K)
    np.testing.assert_allclose(_per_row(_rollout(moved), riskpo.Config()), _per_row(_rollout(r), riskpo.Config()),
                               rtol=1e-3, atol=1e-3)
    flat = np.repeat(r[::K], K)
    assert np.all(_per_row(_rollout(flat), riskpo.Config()) == 0)


@given(st.integers(0, 2**16))
def test_full_band_without_cvar_is_grpo_up_to_a_per_group_constant(seed):
    """α = 0, β = 1, ω = 0: a = min, b = max, A = (X − max)/(std + ε): GRPO's advantage
    minus a per-group constant; the on-policy gradients differ by REINFORCE on that constant."""
    rollout, stats = random_batch(seed, B, T, K, binary_rewards=True)
    rollout = on_policy(rollout, stats)
    cfg = RISKPO.Config(alpha=0.0, beta_quantile=1.0, mix_weight=0.0, credit="uniform", eps=1e-6)
    grpo = get_algorithm("grpo")
    gcfg = grpo.Config(kl_coef=0.0, aggregation="token-mean", dual_clip=3.0, std_eps=1e-6)
    adv, _ = RISKPO.advantages(rollout, cfg, ())
    base, _ = grpo.advantages(rollout, gcfg, ())
    shift = np.asarray(adv - base)
    per_row = shift.sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)
    grouped = per_row.reshape(-1, K)
    np.testing.assert_allclose(grouped, np.repeat(grouped[:, :1], K, axis=1), atol=1e-5)
    _, _, grads = loss_and_grad(RISKPO, cfg, stats, rollout)
    _, _, want = loss_and_grad(grpo, gcfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, np.asarray(want.logprobs) + reinforce_gradient(rollout, shift, "token-mean"),
                               rtol=1e-4, atol=1e-7)


@given(rewards, st.integers(0, 2**16))
def test_permuting_rows_within_groups_permutes_advantages(r, seed):
    rng = np.random.default_rng(seed)
    order = np.concatenate([g * K + rng.permutation(K) for g in range(B // K)])
    rollout = _rollout(r)
    np.testing.assert_allclose(_per_row(rollout.select_rows(order), riskpo.Config()),
                               _per_row(rollout, riskpo.Config())[order], rtol=1e-5, atol=1e-6)


def test_paired_defaults_and_rejected_values():
    """The released script's loss: verl's dual-clip PPO (ε = 0.2, c = 3, token mean), no KL."""
    cfg = RISKPO.Config()
    assert (cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip) == (0.2, None, 3.0)
    assert (cfg.aggregation, cfg.kl_coef) == ("token-mean", 0.0)
    assert (cfg.alpha, cfg.beta_quantile, cfg.mix_weight, cfg.bundle_size) == (0.2, 0.9, 1.5, 1)
    with pytest.raises(ValueError, match="alpha must be <= 1"):
        riskpo.Config(alpha=1.5)
    with pytest.raises(ValueError, match="beta-quantile must be >= --alpha"):
        riskpo.Config(alpha=0.5, beta_quantile=0.4)
    with pytest.raises(ValueError, match="bundle-size must be >= 1"):
        riskpo.Config(bundle_size=0)
    with pytest.raises(ValueError, match="credit must be one of"):
        RISKPO.Config(credit="equal")
