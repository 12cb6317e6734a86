"""MinPRO's invariants (Lei, Cheng, Tao 2026, arXiv:2601.22718): the prefix
minimum matches a loop; the prefix weight is ≤ 1 and non-increasing along a
response; it scales GRPO's per-token gradient exactly; when no prefix ratio
falls below 1 (in particular on-policy) the loss is GRPO's."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.minpro import prefix_weight
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

MINPRO = get_algorithm("minpro")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = MINPRO.Config()
GRPO_CFG = GRPO.Config(clip_eps_low=0.2, kl_coef=0.0, aggregation="token-mean")


# One compilation per (algorithm, config) across hypothesis examples.
compiled = functools.cache(compiled)


def _naive_prefix_min(x, mask, exclusive, initial):
    out = np.full(x.shape, initial, dtype=np.float64)
    for b in range(x.shape[0]):
        best = None
        for t in range(x.shape[1]):
            if mask[b, t] and not exclusive:
                best = x[b, t] if best is None else min(best, x[b, t])
            if best is not None:
                out[b, t] = best
            if mask[b, t] and exclusive:
                best = x[b, t] if best is None else min(best, x[b, t])
    return out


@given(seeds, st.booleans(), st.sampled_from([0.0, 7.0]))
def test_prefix_min_matches_a_loop(seed, exclusive, initial):
    rollout, stats = random_batch(seed, B, T, K, masked_rows=(3,))
    mask = np.asarray(rollout.loss_mask)
    x = np.asarray(stats.logprobs - rollout.behaviour_logprobs)
    got = ops.prefix_min(jnp.asarray(x), rollout.loss_mask, exclusive=exclusive, initial=initial)
    np.testing.assert_allclose(got, _naive_prefix_min(x, mask, exclusive, initial), rtol=1e-6, atol=1e-7)


@given(seeds, st.sampled_from([0.3, 1.0, 3.0]))
def test_prefix_weight_is_at_most_one_and_non_increasing(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    lr = jnp.asarray(shift * rng.normal(0, 1, (B, T)), jnp.float32)
    m = np.asarray(prefix_weight(lr, rollout.loss_mask))
    mask = np.asarray(rollout.loss_mask)
    assert np.all(m <= 1.0) and np.all(m > 0)
    for b in range(B):
        on = m[b, mask[b]]
        assert np.all(np.diff(on) <= 0)
        if on.size:
            assert on[0] == 1.0  # empty prefix


@given(seeds, st.sampled_from([0.3, 1.0]))
def test_prefix_weight_scales_grpo_gradient_token_by_token(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 11)
    logp = np.minimum(np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T)), 0.0)
    stats = stats.replace(logprobs=jnp.asarray(logp, jnp.float32))
    adv, _ = GRPO.advantages(rollout, GRPO_CFG, ())
    _, _, grads = compiled(MINPRO, CFG)(stats, rollout, adv)
    _, _, ref = compiled(GRPO, GRPO_CFG)(stats, rollout, adv)
    mask = np.asarray(rollout.loss_mask)
    lr = logp.astype(np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64)
    m = np.exp(np.minimum(_naive_prefix_min(lr, mask, exclusive=True, initial=0.0), 0.0))
    np.testing.assert_allclose(grads.logprobs, m * np.asarray(ref.logprobs), rtol=1e-4, atol=1e-8)


@given(seeds)
def test_no_prefix_ratio_below_one_is_grpo(seed):
    """ρ ≥ 1 on every token (π_θ ≥ π_old): m ≡ 1, loss and gradient are GRPO's."""
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed)
    behaviour = np.asarray(stats.logprobs) - np.abs(rng.normal(0, 0.5, (B, T)))
    rollout = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, behaviour, 0.0).astype(jnp.float32))
    adv, _ = GRPO.advantages(rollout, GRPO_CFG, ())
    loss, metrics, grads = compiled(MINPRO, CFG)(stats, rollout, adv)
    ref_loss, _, ref = compiled(GRPO, GRPO_CFG)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-6, atol=1e-8)
    assert metrics["prefix_weight_mean"] == 1.0


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = MINPRO.advantages(rollout, CFG, ())
    _, _, grads = compiled(MINPRO, CFG)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("field, value, message", [
    ("prefix_cap", 0.0, "--prefix-cap must be > 0.0"),
    ("clip_eps_low", -0.1, "--clip-eps-low must be >= 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MINPRO.Config(**{field: value})
