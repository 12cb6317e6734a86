"""GPPO's invariants (Su et al. 2025, arXiv:2508.07629): same loss value as
clip-higher GRPO, same gradient on unclipped tokens, bounded non-zero
gradient on clipped ones."""

import functools
import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

GPPO = get_algorithm("gppo")
GRPO = get_algorithm("grpo")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
CFG = GPPO.Config()
CLIP_HIGHER = GRPO.Config(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=10.0, kl_coef=0.0, aggregation="token-mean")

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _shifted(seed, shift):
    """A batch whose current log-probs move by `shift` × noise from the behaviour ones."""
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 1)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


@given(seeds, st.sampled_from([0.1, 0.5, 2.0]))
def test_loss_value_equals_clip_higher_and_unclipped_gradients_agree(seed, shift):
    rollout, stats = _shifted(seed, shift)
    adv, _ = GPPO.advantages(rollout, CFG, ())
    loss, _, grads = jitted(GPPO, CFG)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted(GRPO, CLIP_HIGHER)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # Unclipped tokens, from the ratio and advantage sign alone.
    r = np.exp(np.asarray(stats.logprobs) - np.asarray(rollout.behaviour_logprobs))
    a = np.asarray(adv)
    clipped = ((a > 0) & (r > 1.28)) | ((a < 0) & ((r < 0.8) | (r > 10.0)))
    free = np.asarray(rollout.loss_mask) & ~clipped
    np.testing.assert_allclose(np.asarray(grads.logprobs)[free], np.asarray(ref_grads.logprobs)[free],
                               rtol=1e-5, atol=1e-7)


@given(seeds, st.floats(0.5, 3.0))
def test_clipped_tokens_keep_a_bounded_gradient(seed, gap):
    """ρ = e^gap > 1 + ε_h with Â = +1: gradient −w(1 + ε_h) (GRPO: 0);
    ρ = e^-gap < 1 − ε_l with Â = −1: gradient +w(1 − ε_l) (GRPO: 0)."""
    rollout, stats = random_batch(seed, B, T, K)
    mask = rollout.loss_mask
    weights = np.asarray(ops.token_weights(rollout, "token-mean"))
    for sign, bound in ((1.0, 1.0 + CFG.clip_eps_high), (-1.0, 1.0 - CFG.clip_eps_low)):
        shifted = rollout.replace(behaviour_logprobs=jnp.where(mask, stats.logprobs - sign * gap, 0.0))
        adv = jnp.where(mask, sign, 0.0)
        _, metrics, grads = jitted(GPPO, CFG)(stats, shifted, adv)
        np.testing.assert_allclose(grads.logprobs, -weights * sign * bound, rtol=1e-5, atol=1e-8)
        _, _, ref = jitted(GRPO, CLIP_HIGHER)(stats, shifted, adv)
        assert np.all(np.asarray(ref.logprobs) == 0)
        assert metrics["clip_frac"] == 1


@given(seeds)
def test_on_policy_gradient_is_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv, _ = GPPO.advantages(rollout, CFG, ())
    _, metrics, grads = jitted(GPPO, CFG)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, "gppo: --clip-eps-low must be >= 0.0; got -1.0"),
    ({"clip_eps_high": -0.28}, "gppo: --clip-eps-high must be >= 0.0"),
    ({"dual_clip": 0.9}, "gppo: --dual-clip must be > 1.0"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GPPO.Config(**overrides)
