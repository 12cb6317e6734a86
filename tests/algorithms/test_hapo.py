"""HAPO's invariants (Liu et al. 2025, arXiv:2509.16591): entropy-independent
settings are GRPO/DAPO with a dual clip; entropy scores lie in [−1, 1], are
monotone in entropy and 0 at the pivot quantile; clip bounds are monotone in
the score; the token-level group average matches a direct computation;
on-policy the gradient is REINFORCE's with redistributed advantages."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.hapo import adaptive_clip, entropy_scores
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

HAPO = get_algorithm("hapo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = HAPO.Config()


# One compilation per (algorithm, config) across hypothesis examples.
compiled = functools.cache(compiled)


@given(seeds, st.sampled_from([0.3, 1.5]))
def test_entropy_independent_settings_are_grpo_with_dual_clip(seed, shift):
    cfg = HAPO.Config(clip_alpha=0.0, adv_beta=0.0, token_level_advantage=False)
    grpo_cfg = GRPO.Config(clip_eps_low=0.2, dual_clip=10.0, kl_coef=0.0, aggregation="token-mean")
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    logp = np.minimum(np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T)), 0.0)
    stats = stats.replace(logprobs=jnp.asarray(logp, jnp.float32), entropy=None)
    adv, _ = HAPO.advantages(rollout, cfg, ())
    np.testing.assert_array_equal(adv, GRPO.advantages(rollout, grpo_cfg, ())[0])
    loss, _, grads = compiled(HAPO, cfg)(stats, rollout, adv)
    ref_loss, _, ref = compiled(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-6, atol=1e-8)


@given(seeds, st.sampled_from([0.5, 0.8]))
def test_entropy_scores_are_bounded_monotone_and_zero_at_the_pivot(seed, pivot):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(6,))
    valid = np.asarray(rollout.loss_mask)
    h = np.asarray(entropy_scores(stats.entropy, rollout.loss_mask, pivot))
    ent = np.asarray(stats.entropy, np.float64)[valid]
    scores = h[valid]
    assert np.all(np.abs(scores) <= 1 + 1e-6) and np.all(h[~valid] == 0)
    np.testing.assert_allclose([scores.max(), scores.min()], [1.0, -1.0], rtol=1e-5)
    order = np.argsort(ent, kind="stable")
    assert np.all(np.diff(scores[order]) >= -1e-6)
    at_pivot = order[int(round(pivot * (ent.size - 1)))]  # nearest-rank quantile
    assert abs(scores[at_pivot]) < 1e-6


@given(st.lists(st.floats(-1.0, 1.0, width=32), min_size=2, max_size=20))
def test_clip_bounds_are_monotone_in_the_entropy_score(hs):
    h = jnp.sort(jnp.asarray(hs, jnp.float32))
    eps_low, eps_high = (np.asarray(x) for x in adaptive_clip(h, 0.2, 0.2, 1.0))
    assert np.all(np.diff(eps_low) <= 1e-7) and np.all(np.diff(eps_high) >= -1e-7)
    assert np.all(eps_low >= 0.2 - 1e-7) and np.all(eps_high >= 0.2 - 1e-7)
    assert np.all(eps_low[np.asarray(h) > 0] == np.float32(0.2))
    assert np.all(eps_high[np.asarray(h) <= 0] == np.float32(0.2))


@given(seeds)
def test_token_level_group_average_matches_direct_computation(seed):
    rollout, _ = random_batch(seed, B, T, K, binary_rewards=True)
    adv, _ = HAPO.advantages(rollout, CFG, ())
    got = np.asarray(ops.sequence_mean(adv, rollout.loss_mask))
    lengths = np.asarray(rollout.loss_mask).sum(1)
    r = np.asarray(rollout.rewards, np.float64)
    for g in range(B // K):
        rows = slice(g * K, (g + 1) * K)
        tokens = np.repeat(r[rows], lengths[rows])  # every trained token carries its row's reward
        want = (r[rows] - tokens.mean()) / (tokens.std() + CFG.std_eps)
        if np.any(np.abs(want) >= CFG.outlier_threshold):
            centred = r[rows] - r[rows].mean()
            want = centred / (r[rows].std(ddof=1) + CFG.std_eps)
        want = np.where(lengths[rows] > 0, want, 0.0)
        np.testing.assert_allclose(got[rows], want, rtol=1e-4, atol=1e-5)


@given(seeds)
def test_on_policy_gradient_is_reinforce_with_redistributed_advantages(seed):
    """At ρ = 1 every token is in the neutral band: high-entropy tokens keep Â,
    low-entropy ones get Â(1 + βh); nothing is clipped."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = HAPO.advantages(rollout, CFG, ())
    _, metrics, grads = compiled(HAPO, CFG)(stats, rollout, adv)
    h = entropy_scores(stats.entropy, rollout.loss_mask, CFG.entropy_pivot)
    redistributed = jnp.where(h > 0, adv, adv * (1 + CFG.adv_beta * h))
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, redistributed, "token-mean"),
                               rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


def test_config_defaults_and_ranges():
    assert (CFG.clip_bounds, CFG.dual_clip, CFG.kl_coef, CFG.aggregation) == ((0.2, 0.2), 10.0, 0.0, "token-mean")
    assert HAPO.required(CFG) == {"entropy"}
    assert HAPO.required(HAPO.Config(clip_alpha=0.0, adv_beta=0.0)) == frozenset()
    with pytest.raises(ValueError, match="--entropy-pivot must be <= 1.0"):
        HAPO.Config(entropy_pivot=1.5)
    with pytest.raises(ValueError, match="--clip-eps-low must be >= 0.0"):
        HAPO.Config(clip_eps_low=-1.0)
