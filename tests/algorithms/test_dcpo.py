"""DCPO's invariants (Yang et al. 2025, arXiv:2509.02333): dynamic bounds
solve |ρ − 1|·ρ·q = ε and widen as q falls; SAS equals GRPO's z-score at a
prompt's first step and pools earlier steps afterwards; with a constant
behaviour probability the loss is GRPO with fixed bounds and OTM aggregation."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.dcpo import clip_bounds
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

DCPO = get_algorithm("dcpo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
G = B // K
seeds = st.integers(0, 2**16)
CFG = DCPO.Config()
logq = st.floats(-30.0, 0.0, width=32)

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


@given(logq, logq)
def test_bounds_widen_as_the_old_probability_falls(a, b):
    hi_q, lo_q = max(a, b), min(a, b)
    lower, upper = clip_bounds(jnp.array([hi_q, lo_q]), CFG.clip_eps_low, CFG.clip_eps_high, CFG.ratio_cap)
    assert lower[1] <= lower[0] + 1e-6 and upper[1] >= upper[0] - 1e-6
    assert np.all(np.asarray(lower) <= 1.0) and np.all(np.asarray(upper) >= 1.0)


@given(st.floats(-1.0, 0.0, width=32))
def test_bounds_solve_the_probability_weighted_constraint(log_q):
    """Away from the cap and the floor, ρ(ρ − 1)q = ε_high and ρ(1 − ρ)q = ε_low at the bounds."""
    q = float(np.exp(np.float32(log_q)))
    lower, upper = (float(x) for x in clip_bounds(jnp.float32(log_q), 0.16, 0.2, 10.0))
    np.testing.assert_allclose(upper * (upper - 1.0) * q, 0.2, rtol=1e-4)
    if q > 4 * 0.16:
        np.testing.assert_allclose(lower * (1.0 - lower) * q, 0.16, rtol=1e-4)
    else:
        assert lower == 0.5


def test_bounds_near_fixed_window_for_confident_tokens():
    lower, upper = clip_bounds(jnp.float32(0.0), 0.16, 0.2, 10.0)
    assert abs(float(lower) - (1 - 0.16)) < 0.05 and abs(float(upper) - (1 + 0.2)) < 0.05
    lower, upper = clip_bounds(jnp.float32(-200.0), 0.16, 0.2, 10.0)  # q ≈ 0: floor 0.5, cap 10
    assert float(lower) == 0.5 and float(upper) == 10.0


rewards_strategy = st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=B, max_size=B)


def _batch(rewards, prompt_ids):
    rollout, _ = random_batch(0, B, T, K)
    return rollout.replace(rewards=jnp.asarray(rewards, jnp.float32),
                           prompt_ids=jnp.asarray(np.repeat(prompt_ids, K), jnp.int32))


def _per_row(adv, rollout):
    return np.asarray(ops.sequence_mean(adv, rollout.loss_mask))


@given(rewards_strategy)
def test_first_step_is_the_grpo_zscore(rewards):
    rollout = _batch(rewards, [3, 7])
    adv, state = DCPO.advantages(rollout, CFG, DCPO.init_state(CFG))
    r = np.asarray(rewards, np.float64).reshape(G, K)
    std = r.std(axis=1, ddof=1, keepdims=True)
    want = np.where(std > 0, (r - r.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1), 0.0)
    np.testing.assert_allclose(_per_row(adv, rollout), want.reshape(-1), rtol=1e-5, atol=1e-5)
    assert np.asarray(state["count"])[[3, 7]].tolist() == [1, 1]


def _naive_sas(history):
    """SAS from the paper's formulas, pooling the per-step groups as an equal-weight
    mixture: μ = mean of step means, σ² = mean(σ_k² + μ_k²) − μ²."""
    means = [np.mean(r) for r in history]
    stds = [np.std(r, ddof=1) for r in history]
    mu = np.mean(means)
    sigma = np.sqrt(max(np.mean(np.square(stds) + np.square(means)) - mu**2, 0.0))
    r = np.asarray(history[-1], np.float64)
    new = (r - means[-1]) / stds[-1] if stds[-1] > 0 else np.zeros_like(r)
    total = (r - mu) / sigma if sigma > 1e-9 else np.zeros_like(r)
    i = len(history)
    s_new = (i - 1) / i * new + total / i
    s_total = new / i + (i - 1) / i * total
    return np.where(np.abs(s_new) < np.abs(s_total), s_new, s_total)


@given(st.lists(rewards_strategy, min_size=2, max_size=4))
def test_smoothed_advantage_pools_earlier_steps_of_the_prompt(steps):
    advantages = jax.jit(lambda r, s: DCPO.advantages(r, CFG, s))
    state = DCPO.init_state(CFG)
    for step in steps:
        rollout = _batch(step, [11, 12])
        adv, state = advantages(rollout, state)
    got = _per_row(adv, rollout).reshape(G, K)
    for g in range(G):
        history = [np.asarray(s, np.float64).reshape(G, K)[g] for s in steps]
        np.testing.assert_allclose(got[g], _naive_sas(history), rtol=1e-4, atol=1e-4)


def test_equal_current_rewards_still_learn_from_past_steps():
    state = DCPO.init_state(CFG)
    _, state = DCPO.advantages(_batch([0, 1, 0, 1, 1, 1, 0, 0], [5, 6]), CFG, state)
    rollout = _batch([1, 1, 1, 1, 0, 0, 0, 0], [5, 6])
    adv, _ = DCPO.advantages(rollout, CFG, state)
    per_row = _per_row(adv, rollout)
    assert np.all(per_row != 0)
    assert np.all(per_row[:K] > 0) and np.all(per_row[K:] < 0)
    # GRPO gives these all-equal groups nothing.
    grpo, _ = GRPO.advantages(rollout, GRPO.Config(), ())
    assert np.all(np.asarray(grpo) == 0)


@given(seeds, st.floats(-4.0, -0.05))
def test_constant_behaviour_probability_is_grpo_with_fixed_bounds(seed, log_q):
    """Every token with the same q has the same bounds: GRPO with those ε, dual clip 3
    and seq-mean-token-sum aggregation, loss and gradient."""
    rollout, stats = random_batch(seed, B, T, K)
    mask = rollout.loss_mask
    rng = np.random.default_rng(seed)
    rollout = rollout.replace(behaviour_logprobs=jnp.where(mask, log_q, 0.0).astype(jnp.float32))
    stats = stats.replace(logprobs=jnp.asarray(np.minimum(log_q + rng.normal(0, 0.5, (B, T)), 0.0), jnp.float32))
    lower, upper = (float(x) for x in clip_bounds(jnp.float32(log_q), *CFG.clip_bounds, CFG.ratio_cap))
    grpo_cfg = GRPO.Config(clip_eps_low=1 - lower, clip_eps_high=upper - 1, dual_clip=CFG.dual_clip, kl_coef=0.0,
                           aggregation="seq-mean-token-sum")
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, _, grads = jitted(DCPO, CFG)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-4, atol=1e-6)


@given(seeds)
def test_on_policy_gradient_is_reinforce_with_otm_weights(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = GRPO.advantages(rollout, GRPO.Config(), ())
    _, _, grads = jitted(DCPO, CFG)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-sum"),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, 'dcpo: --clip-eps-low must be >= 0.0; got -1.0'),
    ({"dual_clip": 1.0}, 'dcpo: --dual-clip must be > 1.0'),
    ({"ratio_cap": 0.5}, 'dcpo: --ratio-cap must be > 1.0'),
    ({"max_prompts": 0}, 'dcpo: --max-prompts must be >= 1'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DCPO.Config(**overrides)


@given(seeds)
def test_without_dual_clip_the_cap_alone_bounds_the_ratio(seed):
    """dual_clip=None (DualClip off): the upper bound is capped at ratio_cap only."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = DCPO.Config(dual_clip=None, ratio_cap=4.0)
    adv, _ = GRPO.advantages(rollout, GRPO.Config(), ())
    _, metrics, grads = jitted(DCPO, cfg)(stats, rollout, adv)
    assert np.all(np.isfinite(np.asarray(grads.logprobs)))
    _, upper = clip_bounds(rollout.behaviour_logprobs, cfg.clip_eps_low, cfg.clip_eps_high, 4.0)
    mask = np.asarray(rollout.loss_mask)
    assert np.all(np.asarray(upper)[mask] <= 4.0)
    np.testing.assert_allclose(metrics["clip_upper_mean"], np.asarray(upper)[mask].mean(), rtol=1e-5)
