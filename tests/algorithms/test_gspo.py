"""GSPO's invariants (Zheng et al. 2025, arXiv:2507.18071)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, off_policy, on_policy, random_batch, reinforce_gradient

GSPO = get_algorithm("gspo")
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10


# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


def near_policy(seed, scale):
    """A batch whose current log-probs differ from the behaviour ones by N(0, scale)."""
    return off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=1)


@given(st.integers(0, 2**16), st.floats(1e-4, 0.3))
def test_depends_on_token_ratios_only_through_their_geometric_mean(seed, scale):
    """Moving log π_θ of a row's tokens by amounts that sum to zero leaves s_i, hence the
    loss and the (per-row constant) gradient, unchanged."""
    rollout, stats = near_policy(seed, 1e-3)
    cfg = GSPO.Config()
    mask = np.asarray(rollout.loss_mask)
    delta = np.random.default_rng(seed).normal(0, scale, (B, T)) * mask
    delta -= mask * delta.sum(1, keepdims=True) / np.maximum(mask.sum(1, keepdims=True), 1)
    moved = stats.replace(logprobs=stats.logprobs + jnp.asarray(delta, jnp.float32))
    loss, _, grads = jitted("gspo", cfg)(stats, rollout)
    loss2, _, grads2 = jitted("gspo", cfg)(moved, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-3, atol=1e-6)


@given(st.integers(0, 2**16), st.sampled_from([3e-4, 0.01, 0.05]), st.sampled_from([4e-4, 0.02]))
def test_gradient_closed_form_and_whole_response_clipping(seed, eps_low, eps_high):
    """∂L/∂log π_θ(y_{i,t}) = −s_i Â_i / (|y_i| · B) on every token of an unclipped response,
    and 0 on every token of a response whose s_i left the trust region in the clipped direction."""
    rollout, stats = near_policy(seed, 0.02)
    cfg = GSPO.Config(clip_eps_low=eps_low, clip_eps_high=eps_high)
    adv, _ = GSPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("gspo", cfg)(stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    lengths = mask.sum(1)
    log_ratio = (np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs)) * mask
    s = np.exp(log_ratio.sum(1) / lengths)
    a = np.asarray(ops.sequence_mean(adv, rollout.loss_mask), np.float64)
    clipped = ((a > 0) & (s > 1 + eps_high)) | ((a < 0) & (s < 1 - eps_low))
    expected = np.where(mask & ~clipped[:, None], (-s * a / (lengths * B))[:, None], 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=2e-4, atol=1e-7)


@given(st.integers(0, 2**16))
def test_on_policy_gradient_is_sequence_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = GSPO.Config()
    adv, _ = GSPO.advantages(rollout, cfg, ())
    _, metrics, grads = jitted("gspo", cfg)(stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16), st.sampled_from([0.05, 0.2]), st.sampled_from([0.1, 0.28]))
def test_one_token_responses_reduce_to_grpo(seed, eps_low, eps_high):
    """With one trained token per response s_i = ρ_i, and GSPO is GRPO (kl_coef = 0) with the same bounds."""
    rollout, stats = random_batch(seed, B, T, K)
    one = np.zeros((B, T), bool)
    one[np.arange(B), 1 + np.arange(B) % (T - 1)] = True
    rollout = rollout.replace(loss_mask=jnp.asarray(one))
    loss, _, grads = jitted("gspo", GSPO.Config(clip_eps_low=eps_low, clip_eps_high=eps_high))(stats, rollout)
    grpo_cfg = GRPO.Config(kl_coef=0.0, clip_eps_low=eps_low, clip_eps_high=eps_high)
    ref_loss, _, ref_grads = jitted("grpo", grpo_cfg)(stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)


def test_config_defaults_and_ranges():
    cfg = GSPO.Config()
    assert cfg.clip_bounds == (3e-4, 4e-4) and cfg.kl_coef == 0.0
    assert GSPO.required(cfg) == frozenset()
    assert GSPO.required(GSPO.Config(kl_coef=0.1)) == {"ref_logprobs"}
    with pytest.raises(ValueError, match="--clip-eps-low must be >= 0.0"):
        GSPO.Config(clip_eps_low=-1.0)
    with pytest.raises(ValueError, match="--std-eps must be > 0.0"):
        GSPO.Config(std_eps=0.0)
