"""KL-Cov's invariants (Cui et al. 2025, arXiv:2505.22617): fraction 0 is the
unclipped importance-weighted surrogate (GRPO with ε → ∞); otherwise the k
tokens with the largest batch-centred covariance, and only they, carry
κ|log ρ|; the covariance helper matches a direct computation."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

KL_COV = get_algorithm("kl_cov")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
NO_CLIP = GRPO.Config(clip_eps_low=1e9, kl_coef=0.0, aggregation="token-mean")


# One compilation per (algorithm, config) across hypothesis examples.
compiled = functools.cache(compiled)


def _adv(rollout):
    return GRPO.advantages(rollout, NO_CLIP, ())[0]


@given(seeds)
def test_zero_fraction_is_grpo_without_clipping(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = KL_COV.Config(kl_cov_ratio=0.0)
    adv = _adv(rollout)
    loss, metrics, grads = compiled(KL_COV, cfg)(stats, rollout, adv)
    ref_loss, _, ref_grads = compiled(GRPO, NO_CLIP)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)
    assert metrics["kl_cov_frac"] == 0


@given(seeds)
def test_token_covariance_matches_direct_formula(seed):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(1,))
    valid = np.asarray(rollout.loss_mask)
    adv = np.asarray(_adv(rollout), np.float64)
    lp = np.asarray(stats.logprobs, np.float64)
    want = np.where(valid, (adv - adv[valid].mean()) * (lp - lp[valid].mean()), 0.0)
    got = ops.token_covariance(jnp.asarray(adv, jnp.float32), stats.logprobs, rollout.loss_mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.isclose(want[valid].mean(), np.cov(adv[valid], lp[valid], bias=True)[0, 1])


@given(seeds, st.sampled_from([0.01, 0.05, 0.2]), st.sampled_from([0.5, 3.0]))
def test_only_the_top_covariance_tokens_are_penalised(seed, fraction, coef):
    cfg = KL_COV.Config(kl_cov_ratio=fraction, kl_cov_coef=coef)
    rollout, stats = random_batch(seed, B, T, K)
    adv = _adv(rollout)
    loss, _, grads = compiled(KL_COV, cfg)(stats, rollout, adv)
    ref_loss, _, ref = compiled(GRPO, NO_CLIP)(stats, rollout, adv)
    valid = np.asarray(rollout.loss_mask)
    lp = np.asarray(stats.logprobs, np.float64)
    # Rank by the (separately tested) float32 covariance, ties by the content hash.
    cov = np.where(valid, np.asarray(ops.token_covariance(adv, stats.logprobs, valid)), -np.inf)
    tiebreak = np.asarray(ops.token_uniform(0, rollout))
    k = max(int(np.floor(fraction * valid.sum())), 1)
    selected = np.zeros(valid.shape, bool)
    selected.flat[np.lexsort((-tiebreak.ravel(), -cov.ravel()))[:k]] = True
    log_r = lp - np.asarray(rollout.behaviour_logprobs, np.float64)
    w = np.asarray(ops.token_weights(rollout, "token-mean"), np.float64)
    np.testing.assert_allclose(loss - ref_loss, coef * np.sum(w * np.abs(log_r) * selected), rtol=1e-4, atol=1e-6)
    want = np.asarray(ref.logprobs) + np.where(selected, w * coef * np.sign(log_r), 0.0)
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-4, atol=1e-7)


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    """At ρ = 1 the penalty |log ρ| and its gradient vanish."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = KL_COV.Config(kl_cov_ratio=0.2)
    adv = _adv(rollout)
    _, _, grads = compiled(KL_COV, cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)


def test_exactly_k_tokens_even_with_tied_covariances():
    """Tokens of one response with the same log-prob tie in c_t; still exactly k are
    penalised, and the same tokens whatever the row order."""
    rollout, stats = random_batch(2, B, T, K)
    per_row = -0.2 * jnp.arange(1, B + 1, dtype=jnp.float32)[:, None]
    stats = stats.replace(logprobs=jnp.where(rollout.loss_mask, per_row, stats.logprobs))
    adv = _adv(rollout)
    cfg = KL_COV.Config(kl_cov_ratio=0.1)
    valid = rollout.loss_mask
    k = ops.fraction_count(valid, cfg.kl_cov_ratio)
    cov = ops.token_covariance(adv, stats.logprobs, valid)
    chosen = ops.top_k_exact(cov, valid, k, ops.token_uniform(0, rollout))
    assert int(np.sum(chosen)) == int(k) > 1
    assert int(np.sum(ops.top_count_mask(cov, valid, k))) > int(k)  # the ties are real
    order = np.random.default_rng(0).permutation(B)
    permuted = rollout.select_rows(order)
    chosen_p = ops.top_k_exact(cov[order], permuted.loss_mask, k, ops.token_uniform(0, permuted))
    np.testing.assert_array_equal(np.asarray(chosen_p), np.asarray(chosen)[order])


@pytest.mark.parametrize("field, value, message", [
    ("kl_cov_ratio", 1.5, "--kl-cov-ratio must be <= 1.0"),
    ("kl_cov_ratio", -0.1, "--kl-cov-ratio must be >= 0.0"),
    ("kl_cov_coef", -1.0, "--kl-cov-coef must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        KL_COV.Config(**{field: value})
