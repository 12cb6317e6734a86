"""GSPO-token's invariants (Zheng et al. 2025, arXiv:2507.18071, section 4.3)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, off_policy, on_policy, random_batch, reinforce_gradient

GSPO = get_algorithm("gspo")
GSPO_TOKEN = get_algorithm("gspo_token")
K, B, T = 4, 8, 10


# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


def near_policy(seed, scale):
    return off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=1)


@given(
    st.integers(0, 2**16),
    st.sampled_from([1e-4, 3e-4, 1e-3, 0.3]),
    st.sampled_from([0.0, 0.05]),
    st.sampled_from([(3e-4, 4e-4), (0.2, 0.2)]),
)
def test_equals_gspo_when_advantage_is_constant_per_response(seed, scale, kl_coef, eps):
    """Same value and same gradient as GSPO (including which responses are clipped and the KL term)."""
    rollout, stats = near_policy(seed, scale)
    kw = dict(kl_coef=kl_coef, clip_eps_low=eps[0], clip_eps_high=eps[1])
    adv, _ = GSPO.advantages(rollout, GSPO.Config(**kw), ())
    loss, metrics, grads = jitted("gspo_token", GSPO_TOKEN.Config(**kw))(stats, rollout, adv)
    ref_loss, ref_metrics, ref_grads = jitted("gspo", GSPO.Config(**kw))(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(metrics["clip_frac"], ref_metrics["clip_frac"], atol=1e-6)


@given(st.integers(0, 2**16), st.lists(st.floats(-3, 3, width=32), min_size=B * T, max_size=B * T))
def test_token_advantages_get_the_sequence_ratio_as_weight(seed, values):
    """Unclipped, ∂L/∂log π_θ(y_{i,t}) = −s_i Â_{i,t} / (|y_i| · B): every token weighs by the
    same sequence ratio s_i, and by its own advantage."""
    rollout, stats = near_policy(seed, 0.3)
    mask = np.asarray(rollout.loss_mask)
    adv = jnp.asarray(np.where(mask, np.reshape(values, (B, T)), 0.0), jnp.float32)
    cfg = GSPO_TOKEN.Config(clip_eps_low=1e6, clip_eps_high=1e6)
    _, _, grads = jitted("gspo_token", cfg)(stats, rollout, adv)
    lengths = mask.sum(1)
    log_ratio = (np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs)) * mask
    s = np.exp(log_ratio.sum(1) / lengths)
    expected = np.where(mask, -s[:, None] * np.asarray(adv) / (lengths[:, None] * B), 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=2e-4, atol=1e-7)


@given(st.integers(0, 2**16), st.lists(st.floats(-3, 3, width=32), min_size=B * T, max_size=B * T))
def test_on_policy_gradient_is_reinforce_with_token_advantages(seed, values):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv = jnp.asarray(np.where(rollout.loss_mask, np.reshape(values, (B, T)), 0.0), jnp.float32)
    _, metrics, grads = jitted("gspo_token", GSPO_TOKEN.Config())(stats, rollout, adv)
    expected = reinforce_gradient(rollout, adv, "seq-mean-token-mean")
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


def test_config_rejects_bad_values():
    assert GSPO_TOKEN.Config().clip_bounds == (3e-4, 4e-4)
    with pytest.raises(ValueError, match="--clip-eps-high must be >= 0.0"):
        GSPO_TOKEN.Config(clip_eps_high=-1e-4)
    with pytest.raises(ValueError, match="--kl-coef must be >= 0.0"):
        GSPO_TOKEN.Config(kl_coef=-1.0)
