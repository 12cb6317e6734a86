"""BAPO's invariants (Xi et al. 2025, arXiv:2510.18927): the bound search is
Algorithm 1 (checked against a plain Python while loop); when the positive
share already meets ρ₀ the loss is PPO-clip with the base bounds; returned
bounds meet ρ₀ or are the last candidate; on-policy the gradient is
REINFORCE's."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.bapo import search_path
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

BAPO = get_algorithm("bapo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = BAPO.Config()

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 7)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


def _naive_algorithm_1(ratio, adv, weights, cfg):
    """The paper's loop, literally, in float64."""
    def share(c_low, c_high):
        contribution = weights * ratio * np.abs(adv)
        pos = contribution[(adv > 0) & (ratio <= c_high)].sum()
        neg = contribution[(adv < 0) & (ratio >= c_low)].sum()
        return 1.0 if pos + neg == 0 else pos / (pos + neg)

    c_low, c_high = cfg.clip_low_start, cfg.clip_high_start
    rho = share(c_low, c_high)
    while rho < cfg.rho_target and c_low + cfg.clip_low_step <= cfg.clip_low_max + 1e-9:
        if c_high + cfg.clip_high_step <= cfg.clip_high_max + 1e-9:
            c_high += cfg.clip_high_step
        else:
            c_low += cfg.clip_low_step
        rho = share(c_low, c_high)
    return c_low, c_high, rho


def test_search_path_is_high_bound_first_then_low_bound():
    lows, highs = search_path(CFG)
    assert (lows[0], highs[0]) == (0.6, 1.2)
    assert len(lows) == 1 + 36 + 15
    n_high = 36
    assert all(low == 0.6 for low in lows[:n_high + 1]) and np.all(np.diff(highs[:n_high + 1]) > 0)
    assert all(abs(h - highs[n_high]) < 1e-12 for h in highs[n_high:]) and np.all(np.diff(lows[n_high:]) > 0)
    assert abs(highs[-1] - 3.0) < 1e-9 and abs(lows[-1] - 0.9) < 1e-9


@given(seeds, st.sampled_from([0.3, 1.0, 2.5]), st.sampled_from([0.3, 0.5, 0.7]))
def test_bounds_match_the_papers_loop(seed, shift, rho_target):
    cfg = BAPO.Config(rho_target=rho_target)
    rollout, stats = _batch(seed, shift)
    adv, _ = BAPO.advantages(rollout, cfg, ())
    _, metrics, _ = jitted(BAPO, cfg)(stats, rollout, adv)
    mask = np.asarray(ops.weighted_mask(rollout)) > 0
    ratio = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))[mask]
    weights = np.asarray(ops.token_weights(rollout, cfg.aggregation), np.float64)[mask]
    c_low, c_high, rho = _naive_algorithm_1(ratio, np.asarray(adv, np.float64)[mask], weights, cfg)
    np.testing.assert_allclose([metrics["clip_low"], metrics["clip_high"]], [c_low, c_high], atol=1e-5)
    np.testing.assert_allclose(metrics["positive_share"], rho, rtol=1e-4, atol=1e-5)
    # Returned bounds meet the target or are the end of the search path.
    lows, highs = search_path(cfg)
    at_end = abs(c_low - lows[-1]) < 1e-6 and abs(c_high - highs[-1]) < 1e-6
    assert metrics["positive_share"] >= rho_target - 1e-6 or at_end


@given(seeds, st.sampled_from([0.3, 1.0, 2.5]))
def test_target_met_at_base_bounds_is_ppo_clip_with_base_bounds(seed, shift):
    """ρ₀ = 0 is met at once: the loss is GRPO's clipped surrogate with
    [c_low, c_high] = [0.6, 1.2], loss and gradient."""
    cfg = BAPO.Config(rho_target=0.0)
    rollout, stats = _batch(seed, shift)
    grpo_cfg = GRPO.Config(clip_eps_low=0.4, clip_eps_high=0.2, kl_coef=0.0, aggregation="token-mean")
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, metrics, grads = jitted(BAPO, cfg)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([metrics["clip_low"], metrics["clip_high"]], [0.6, 1.2], atol=1e-6)


@given(seeds)
def test_only_positive_advantages_keep_the_base_bounds(seed):
    rollout, stats = _batch(seed, 1.0)
    adv = jnp.where(rollout.loss_mask, jnp.abs(jax.random.normal(jax.random.key(seed), (B, T))) + 0.1, 0.0)
    _, metrics, _ = jitted(BAPO, CFG)(stats, rollout, adv)
    assert metrics["positive_share"] == 1.0
    np.testing.assert_allclose([metrics["clip_low"], metrics["clip_high"]], [0.6, 1.2], atol=1e-6)


def test_negative_dominated_batch_widens_the_window():
    """All advantages negative except one small positive token: ρ < ρ₀ everywhere,
    so the search runs to the end of the path."""
    rollout, stats = _batch(3, 1.0)
    mask = np.asarray(rollout.loss_mask)
    adv = np.where(mask, -1.0, 0.0)
    first = tuple(np.argwhere(mask)[0])
    adv[first] = 0.01
    _, metrics, _ = jitted(BAPO, CFG)(stats, rollout, jnp.asarray(adv, jnp.float32))
    np.testing.assert_allclose([metrics["clip_low"], metrics["clip_high"]], [0.9, 3.0], atol=1e-5)


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = BAPO.advantages(rollout, CFG, ())
    _, metrics, grads = jitted(BAPO, CFG)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


def test_bounds_are_a_whole_batch_quantity():
    """Why BAPO is exempt from the microbatch invariant: two halves of a batch
    can need different bounds from the whole."""
    rollout, stats = _batch(5, 1.0)
    mask = np.asarray(rollout.loss_mask)
    adv = np.where(mask, 1.0, 0.0)
    adv[B // 2:] = np.where(mask[B // 2:], -1.0, 0.0)  # first half positive, second negative
    adv = jnp.asarray(adv, jnp.float32)
    whole = jitted(BAPO, CFG)(stats, rollout, adv)[1]
    halves = [jitted(BAPO, CFG)(jax.tree.map(lambda x: x[s], stats), micro, adv[s])[1]
              for s, micro in zip((slice(0, B // 2), slice(B // 2, B)), rollout.microbatches(2))]
    # The positive half keeps the base bounds, the negative half runs to the end of
    # the path; the whole batch can match at most one of them.
    np.testing.assert_allclose([halves[0]["clip_low"], halves[0]["clip_high"]], [0.6, 1.2], atol=1e-6)
    np.testing.assert_allclose([halves[1]["clip_low"], halves[1]["clip_high"]], [0.9, 3.0], atol=1e-5)
    assert 0.0 < float(whole["positive_share"]) < 1.0


@pytest.mark.parametrize("overrides, message", [
    ({"rho_target": 1.5}, "bapo: --rho-target must be <= 1.0; got 1.5"),
    ({"clip_low_start": 0.0}, "bapo: --clip-low-start must be > 0.0"),
    ({"clip_high_start": 0.9}, "bapo: --clip-high-start must be >= 1.0"),
    ({"clip_high_max": 1.1}, "bapo: --clip-high-max must be >= --clip-high-start; got 1.1 < 1.2"),
    ({"dual_clip": 0.5}, "bapo: --dual-clip must be > 1.0"),
    ({"kl_coef": -0.1}, "bapo: --kl-coef must be >= 0.0"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        BAPO.Config(**overrides)
