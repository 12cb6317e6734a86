"""Lp-Reg's invariants (Huang et al. 2025, arXiv:2510.03222; Lp-Reg-dev lp_reg loss)."""

import dataclasses

import jax.numpy as jnp
import pytest
import numpy as np
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.algorithms.lp_reg import proxy_logprob
from rlzoo.testing import loss_and_grad, random_batch

LPREG = get_algorithm("lp_reg")
K, B, T, V = 4, 8, 10, 6


def full_vocab_batch(seed):
    """A batch whose top-k log-probs are the whole (V-token) distributions the
    old (behaviour) and current log-probs are drawn from, so the proxy is
    exact. The last token of the vocabulary is noise (always filtered by
    min-p), so the proxy renormalises the others upwards. Returns the batch
    and, per proxy source, (full log-probs [B, T, V], sampled log-probs [B, T])."""
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, V - 1, (B, T))  # the noise token is never sampled
    mask = np.asarray(rollout.loss_mask)
    dists = {}
    logits = rng.normal(0, 1.0, (B, T, V))
    for source in ("old", "current"):
        logits[..., -1] = -9.0
        logp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        dists[source] = (logp_all, np.take_along_axis(logp_all, picked[..., None], -1)[..., 0])
        logits = logits + rng.normal(0, 0.3, logits.shape)  # the update moved the policy
    stats = stats.replace(
        logprobs=jnp.asarray(dists["current"][1], jnp.float32),
        topk_logprobs=jnp.asarray(-np.sort(-dists["current"][0], axis=-1), jnp.float32),
    )
    rollout = rollout.replace(
        behaviour_logprobs=jnp.asarray(np.where(mask, dists["old"][1], 0.0), jnp.float32),
        old_topk_logprobs=jnp.asarray(-np.sort(-dists["old"][0], axis=-1), jnp.float32),
    )
    return rollout, stats, dists


def numpy_proxy(logp_all, logp, kappa):
    p_all, p = np.exp(logp_all), np.exp(logp)
    cutoff = kappa * p_all.max(-1)
    mass = np.where(p_all >= cutoff[..., None], p_all, 0).sum(-1)
    with np.errstate(divide="ignore"):
        return np.where(p >= cutoff, np.log(p / mass), -np.inf)


@given(st.integers(0, 2**16), st.floats(0.001, 0.9))
def test_proxy_is_the_min_p_renormalised_distribution(seed, kappa):
    """Over the vocabulary the proxy sums to 1, is 0 on filtered tokens and
    equals π / Σ_kept π on kept ones."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, V)
    logp_all = logits - np.log(np.exp(logits).sum())
    topk = jnp.asarray(np.tile(-np.sort(-logp_all), (V, 1)), jnp.float32)
    got = np.asarray(proxy_logprob(topk, jnp.asarray(logp_all, jnp.float32), kappa), np.float64)
    want = numpy_proxy(logp_all, logp_all, kappa)
    kept = np.isfinite(want)
    # Tokens on the min-p boundary (float32 rounding) are not compared.
    p = np.exp(logp_all)
    clear = np.abs(p - kappa * p.max()) > 1e-5 * p.max()
    assert np.array_equal(np.isfinite(got)[clear], kept[clear])
    np.testing.assert_allclose(got[kept & clear], want[kept & clear], rtol=1e-4, atol=1e-5)
    if clear.all():
        np.testing.assert_allclose(np.exp(got[kept]).sum(), 1.0, rtol=1e-5)


@given(st.integers(0, 2**16))
def test_no_selection_is_grpo_with_lp_reg_bounds(seed):
    """q⁻ = q⁺ = 0: the clipped surrogate with ε = (1.0, 9.0), token-mean, kl_coef = 0."""
    rollout, stats = random_batch(seed, B, T, K)
    loss, metrics, grads = loss_and_grad(LPREG, LPREG.Config(neg_fraction=0.0), stats, rollout)
    grpo = get_algorithm("grpo")
    gcfg = grpo.Config(clip_eps_low=1.0, clip_eps_high=9.0, kl_coef=0.0, aggregation="token-mean")
    base_loss, _, base = loss_and_grad(grpo, gcfg, stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)
    assert metrics["reg_frac"] == 0


SOURCES = st.sampled_from(["old", "current"])


@given(st.integers(0, 2**16), st.floats(0.05, 0.5), st.floats(0.001, 0.01), st.floats(0.1, 3.0), SOURCES)
def test_regularised_sparks_and_their_gradient(seed, q, kappa, coef, source):
    """Selected: the max(1, ⌊qN⁻⌋) lowest-log-prob negative-advantage tokens with
    log π_θ < log π_proxy, π_proxy the min-p renormalised old (paper) or
    current policy; their gradient is w (−Âρ + c (1 − π_proxy/π_θ)), the rest
    keeps the clipped-surrogate gradient."""
    rollout, stats, dists = full_vocab_batch(seed)
    logp = dists["current"][1]
    cfg = LPREG.Config(neg_fraction=q, minp_threshold=kappa, reg_coef=coef, proxy_policy=source)
    adv, _ = LPREG.advantages(rollout, cfg, ())
    _, _, grads = loss_and_grad(LPREG, cfg, stats, rollout)
    _, _, plain = loss_and_grad(LPREG, LPREG.Config(neg_fraction=0.0), stats, rollout)
    a = np.asarray(adv)
    mask = np.asarray(rollout.loss_mask)
    negative = mask & (a < 0)
    n = negative.sum()
    count = max(1, int(np.floor(q * n)))
    lowest = np.zeros_like(mask)
    order = np.argsort(np.where(negative, logp, np.inf), axis=None, kind="stable")[:count]
    lowest.reshape(-1)[order] = True
    proxy = numpy_proxy(*dists[source], kappa)
    selected = lowest & (logp < proxy)
    w = mask / mask.sum()
    rho = np.exp(logp - np.asarray(rollout.behaviour_logprobs, np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        spark = w * (-a * rho + coef * (1 - np.exp(proxy - logp)))
    g, g0 = np.asarray(grads.logprobs), np.asarray(plain.logprobs)
    np.testing.assert_allclose(g[selected], spark[selected], rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(g[~selected], g0[~selected], rtol=1e-5, atol=1e-8)
    # The pull raises a spark's probability: the KL part of its gradient is < 0.
    assert np.all(coef * (1 - np.exp(proxy - logp))[selected] < 0)


@given(st.integers(0, 2**16))
def test_the_proxy_comes_from_the_chosen_policy(seed):
    """The old-policy proxy reads only the Rollout's old distribution, the
    current-policy one only PolicyStats: changing the other leaves the loss as is."""
    rollout, stats, _ = full_vocab_batch(seed)
    shuffled = -np.sort(np.random.default_rng(seed).exponential(1.0, stats.topk_logprobs.shape), axis=-1)
    for source, moved_rollout, moved_stats in (
        ("old", rollout, stats.replace(topk_logprobs=jnp.asarray(shuffled, jnp.float32))),
        ("current", rollout.replace(old_topk_logprobs=jnp.asarray(shuffled, jnp.float32)), stats),
    ):
        cfg = LPREG.Config(neg_fraction=0.3, minp_threshold=0.005, proxy_policy=source)
        assert cfg.proxy_policy in ("old", "current")
        np.testing.assert_array_equal(loss_and_grad(LPREG, cfg, stats, rollout)[0],
                                      loss_and_grad(LPREG, cfg, moved_stats, moved_rollout)[0])
    assert LPREG.required(LPREG.Config()) >= {"old_topk_logprobs"}
    assert "topk_logprobs" not in LPREG.required(LPREG.Config())
    assert LPREG.topk_size(LPREG.Config()) == LPREG.topk_size(LPREG.Config(proxy_policy="current")) == 4


@pytest.mark.parametrize("source", ["old", "current"])
def test_sparks_are_found_and_noise_is_not(source):
    """In typical batches some low-probability negative tokens are regularised
    (the property above is not vacuous), and a sampled noise token (filtered by
    min-p) never is, however low its probability."""
    found = 0
    for seed in range(5):
        rollout, stats, dists = full_vocab_batch(seed)
        cfg = LPREG.Config(neg_fraction=0.3, minp_threshold=0.005, proxy_policy=source)
        _, metrics, _ = loss_and_grad(LPREG, cfg, stats, rollout)
        found += float(metrics["reg_frac"]) > 0
        mask = rollout.loss_mask
        noise = stats.replace(logprobs=jnp.where(mask, jnp.asarray(dists["current"][0][..., -1], jnp.float32), stats.logprobs))
        noise_rollout = rollout.replace(behaviour_logprobs=jnp.where(mask, jnp.asarray(dists["old"][0][..., -1], jnp.float32), 0.0))
        _, metrics, _ = loss_and_grad(LPREG, dataclasses.replace(cfg, neg_fraction=1.0), noise, noise_rollout)
        assert metrics["reg_frac"] == 0
    assert found >= 4


@pytest.mark.parametrize("field, value, message", [
    ("minp_threshold", 0.0, "--minp-threshold must be > 0.0"),
    ("neg_fraction", 1.5, "--neg-fraction must be <= 1.0"),
    ("clip_eps_high", -1.0, "--clip-eps-high must be >= 0.0"),
    ("proxy_policy", "reference", "--proxy-policy must be one of old, current"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LPREG.Config(**{field: value})
