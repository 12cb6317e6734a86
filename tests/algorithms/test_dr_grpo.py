"""Dr.GRPO's invariants (Liu et al. 2025, arXiv:2503.20783)."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import loss_and_grad, off_policy, on_policy, random_batch

DR_GRPO = get_algorithm("dr_grpo")
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10
rewards_strategy = st.lists(st.floats(-100, 100, width=32), min_size=B, max_size=B).map(
    lambda xs: jnp.asarray(xs, jnp.float32)
)


def _row_advantage(rollout):
    adv, _ = DR_GRPO.advantages(rollout, DR_GRPO.Config(), ())
    return np.asarray(ops.sequence_mean(adv, rollout.loss_mask))


@given(rewards_strategy, st.floats(-50, 50), st.floats(0.1, 10))
def test_advantage_is_centred_not_scaled(rewards, shift, scale):
    """Â = R − mean_g R: zero group mean, invariant to a shift per group, and (unlike GRPO)
    proportional to the reward scale — no difficulty bias from 1/std."""
    rollout, _ = random_batch(0, B, T, K)
    base = _row_advantage(rollout.replace(rewards=rewards))
    grouped = np.asarray(rewards, np.float64).reshape(-1, K)
    expected = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
    np.testing.assert_allclose(base, expected, rtol=1e-5, atol=1e-3)
    shifts = jnp.repeat(jnp.arange(B // K, dtype=jnp.float32) * shift, K)
    moved = _row_advantage(rollout.replace(rewards=scale * rewards + shifts))
    np.testing.assert_allclose(moved, scale * base, rtol=1e-4, atol=2e-3 * scale)


@given(st.integers(0, 2**16), st.integers(1, 40))
def test_token_weight_does_not_depend_on_response_length(seed, norm_len):
    """On-policy, every trained token of row i gets gradient −Â_i / (L_gen · B): the same for
    a short and a long response (no length bias)."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = DR_GRPO.Config(norm_len=norm_len)
    loss, metrics, grads = loss_and_grad(DR_GRPO, cfg, stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    row_adv = _row_advantage(rollout)
    expected = np.where(mask, -row_adv[:, None] / (norm_len * B), 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-5, atol=1e-8)
    # The loss is −Σ_i Â_i Σ_t ρ / (L_gen · B) with ρ = 1.
    np.testing.assert_allclose(loss, -(row_adv * mask.sum(1)).sum() / (norm_len * B), rtol=1e-5, atol=1e-6)


@given(st.integers(0, 2**16))
def test_reduces_to_grpo_without_std_and_length_normalisation(seed):
    """Dr.GRPO = GRPO(scale_rewards=False, aggregation=seq-mean-token-sum-norm, kl_coef = 0)."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=(0,))
    loss, _, grads = loss_and_grad(DR_GRPO, DR_GRPO.Config(), stats, rollout)
    grpo_cfg = GRPO.Config(kl_coef=0.0, scale_rewards=False, aggregation="seq-mean-token-sum-norm")
    ref_loss, _, ref_grads = loss_and_grad(GRPO, grpo_cfg, stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-9)


@given(st.integers(0, 2**16), st.sampled_from([(0.1, None), (0.2, 0.28)]))
def test_clip_bounds_are_grpos(seed, bounds):
    """Off-policy, the clipped surrogate uses [1 − ε_low, 1 + ε_high] exactly as GRPO's."""
    low, high = bounds
    rollout, stats = off_policy(seed, 0.5, batch=B, length=T, group_size=K)
    cfg = DR_GRPO.Config(clip_eps_low=low, clip_eps_high=high)
    loss, _, grads = loss_and_grad(DR_GRPO, cfg, stats, rollout)
    grpo_cfg = GRPO.Config(clip_eps_low=low, clip_eps_high=high, kl_coef=0.0, scale_rewards=False,
                           aggregation="seq-mean-token-sum-norm")
    ref_loss, _, ref_grads = loss_and_grad(GRPO, grpo_cfg, stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, 'dr_grpo: --clip-eps-low must be >= 0.0; got -1.0'),
    ({"norm_len": 0}, 'dr_grpo: --norm-len must be >= 1'),
    ({"kl_estimator": "k4"}, 'dr_grpo: --kl-estimator must be one of'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DR_GRPO.Config(**overrides)
