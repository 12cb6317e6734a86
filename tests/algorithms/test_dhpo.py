"""DHPO's invariants (Min et al. 2026, arXiv:2601.05607): w = 1 is GRPO,
w = 0 is GSPO; the stop-gradient sequence ratio has the value of the
sequence ratio and the gradient of a token ratio; the entropy weight lies in
(0, 1) and is ½ at average entropy; on-policy the gradient is REINFORCE's."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.algorithms.dhpo import mixing_weight
from rlzoo.testing import compiled, on_policy, random_batch, reinforce_gradient

DHPO = get_algorithm("dhpo")
GRPO = get_algorithm("grpo")
GSPO = get_algorithm("gspo")
GSPO_TOKEN = get_algorithm("gspo_token")
B, T, K = 8, 10, 4
seeds = st.integers(0, 2**16)
shifts = st.sampled_from([1e-4, 0.02, 0.5])

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.cache(compiled)


def _batch(seed, shift):
    rollout, stats = random_batch(seed, B, T, K)
    rng = np.random.default_rng(seed + 13)
    logp = np.asarray(rollout.behaviour_logprobs) + shift * rng.normal(0, 1, (B, T))
    return rollout, stats.replace(logprobs=jnp.asarray(np.minimum(logp, 0.0), jnp.float32))


@given(seeds, shifts)
def test_token_weight_one_is_grpo(seed, shift):
    rollout, stats = _batch(seed, shift)
    cfg = DHPO.Config(token_weight=1.0)
    grpo_cfg = GRPO.Config(clip_eps_low=0.2, kl_coef=0.0, aggregation="seq-mean-token-mean")
    adv, _ = GRPO.advantages(rollout, grpo_cfg, ())
    loss, _, grads = jitted(DHPO, cfg)(stats, rollout, adv)
    ref_loss, _, ref = jitted(GRPO, grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-5, atol=1e-7)


@given(seeds, shifts)
def test_token_weight_zero_is_gspo(seed, shift):
    rollout, stats = _batch(seed, shift)
    cfg = DHPO.Config(token_weight=0.0)
    adv, _ = GRPO.advantages(rollout, GRPO.Config(), ())
    loss, _, grads = jitted(DHPO, cfg)(stats, rollout, adv)
    for algo in (GSPO, GSPO_TOKEN):
        ref_loss, _, ref = jitted(algo, algo.Config())(stats, rollout, adv)  # ε = 3e-4 / 4e-4 both
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads.logprobs, ref.logprobs, rtol=1e-4, atol=1e-7)


@given(seeds, st.floats(-3.0, 3.0))
def test_stop_gradient_ratio_value_and_gradient(seed, log_w):
    _, stats = random_batch(seed, B, T, K)
    log_weight = jnp.full((B, T), log_w, jnp.float32)
    value, vjp = jax.vjp(lambda lp: ops.stop_gradient_ratio(log_weight, lp), stats.logprobs)
    np.testing.assert_allclose(value, np.exp(log_w), rtol=1e-5)
    (grad,) = vjp(jnp.ones((B, T)))
    np.testing.assert_allclose(grad, np.exp(log_w), rtol=1e-5)  # diagonal: only through the token itself
    grad_w = jax.grad(lambda w: ops.stop_gradient_ratio(w, stats.logprobs).sum())(log_weight)
    assert np.all(np.asarray(grad_w) == 0)


@given(seeds)
def test_entropy_weight_is_in_the_unit_interval_and_half_at_the_mean(seed):
    rollout, _ = random_batch(seed, B, T, K)
    cfg = DHPO.Config(mixing="entropy")
    w = np.asarray(mixing_weight(rollout, cfg))
    assert np.all((w >= 0) & (w <= 1))
    flat = mixing_weight(rollout.replace(sample_entropy=jnp.full((B, T), 0.7)), cfg)
    np.testing.assert_allclose(np.asarray(flat)[np.asarray(rollout.loss_mask)], 0.5, rtol=1e-6)


@given(seeds, st.sampled_from(["fixed", "entropy"]))
def test_on_policy_gradient_is_reinforce(seed, mixing):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = DHPO.Config(mixing=mixing)
    adv, _ = DHPO.advantages(rollout, cfg, ())
    _, metrics, grads = jitted(DHPO, cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-mean"),
                               rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"token_weight": 1.5}, 'dhpo: --token-weight must be <= 1.0; got 1.5'),
    ({"seq_clip_low": -1e-4}, 'dhpo: --seq-clip-low must be >= 0.0'),
    ({"mixing": "average"}, "dhpo: --mixing must be one of fixed, entropy; got 'average'"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DHPO.Config(**overrides)
