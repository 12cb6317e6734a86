"""CTPO's invariants (Zhang et al. 2026, arXiv:2605.07331): the cumulative
log-ratio is the prefix sum of token log-ratios over trained tokens (first =
ρ_1, last = the sequence ratio); one trained token per row is PPO with the
t = 1 log-space bounds; gradients vanish exactly where the position-scaled
window clips; on-policy the gradient is REINFORCE's."""

import functools
import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

CTPO = get_algorithm("ctpo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = CTPO.Config()

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 5)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


def _naive_prefix(x, mask):
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        running = 0.0
        for t in range(x.shape[1]):
            if mask[b, t]:
                running += x[b, t]
            out[b, t] = running
    return out


@given(seeds)
def test_prefix_sum_matches_a_loop_and_spans_first_to_sequence_ratio(seed):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(2,))
    mask = np.asarray(rollout.loss_mask)
    lr = np.asarray(stats.logprobs - rollout.behaviour_logprobs, np.float64)
    got = np.asarray(ops.prefix_sum(jnp.asarray(lr, jnp.float32), rollout.loss_mask))
    np.testing.assert_allclose(got, _naive_prefix(lr, mask), rtol=1e-5, atol=1e-5)
    for b in np.flatnonzero(mask.any(1)):
        on = np.flatnonzero(mask[b])
        np.testing.assert_allclose(got[b, on[0]], lr[b, on[0]], rtol=1e-6, atol=1e-6)    # w_1 = ρ_1
        np.testing.assert_allclose(np.exp(got[b, on[-1]]), np.prod(np.exp(lr[b, on])), rtol=1e-4)  # w_T = Π ρ


@given(seeds, st.sampled_from([0.05, 0.3, 1.0]))
def test_single_token_responses_are_ppo_with_the_first_position_bounds(seed, shift):
    rollout, stats = _batch(seed, shift)
    mask = np.asarray(rollout.loss_mask)
    first = np.zeros_like(mask)
    for b in np.flatnonzero(mask.any(1)):
        first[b, np.flatnonzero(mask[b])[0]] = True
    rollout = rollout.replace(loss_mask=jnp.asarray(first))
    grpo_cfg = GRPO.Config(clip_eps_low=1 - np.exp(-CFG.clip_low), clip_eps_high=np.exp(CFG.clip_high) - 1,
                           dual_clip=float(np.exp(CFG.clip_dual)), kl_coef=0.0, aggregation="token-mean")
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, _, grads = jitted(CTPO, CFG)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-7)


@given(seeds, st.sampled_from([0.05, 0.2, 0.6]))
def test_gradient_vanishes_exactly_outside_the_position_scaled_window(seed, shift):
    """Â > 0: the gradient is −w·e^{S_t}·Â inside (S_t ≤ c_high √t) and 0 outside;
    Â < 0: −w·e^{S_t}·Â while −c_low √t ≤ S_t ≤ c_dual √t, else 0."""
    rollout, stats = _batch(seed, shift)
    adv, _ = CTPO.advantages(rollout, CFG, ())
    _, _, grads = jitted(CTPO, CFG)(stats, rollout, adv)
    mask = np.asarray(rollout.loss_mask)
    lr = np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64)
    cum = _naive_prefix(lr, mask)
    root_t = np.sqrt(np.maximum(np.cumsum(mask, axis=1), 1))
    a = np.asarray(adv, np.float64)
    inside = np.where(a > 0, cum <= CFG.clip_high * root_t,
                      (cum >= -CFG.clip_low * root_t) & (cum <= CFG.clip_dual * root_t))
    w = np.asarray(ops.token_weights(rollout, "token-mean"), np.float64)
    want = np.where(mask & inside, -w * np.exp(cum) * a, 0.0)
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-4, atol=1e-7)


@given(seeds, st.sampled_from(["cumprod", "geomean"]))
def test_on_policy_gradient_is_reinforce(seed, mode):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = CTPO.Config(ratio_mode=mode)
    adv, _ = CTPO.advantages(rollout, cfg, ())
    _, metrics, grads = jitted(CTPO, cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"clip_low": -0.1}, "ctpo: --clip-low must be >= 0.0; got -0.1"),
    ({"clip_high": -1.0}, "ctpo: --clip-high must be >= 0.0"),
    ({"clip_dual": 0.0}, "ctpo: --clip-dual must be > 0.0"),
    ({"ratio_mode": "sum"}, "ctpo: --ratio-mode must be one of cumprod, geomean; got 'sum'"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CTPO.Config(**overrides)
