"""DAPO's invariants (Yu et al. 2025, arXiv:2503.14476)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.experience import row_transforms
from rlzoo.testing import compiled, loss_and_grad, on_policy, random_batch, reinforce_gradient

DAPO = get_algorithm("dapo")
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


def naive_penalty(length, truncated, l_max, l_cache):
    """Eq. 13 of the paper, written out case by case (plus: truncated = longer than L_max)."""
    if truncated or length > l_max:
        return -1.0
    if length <= l_max - l_cache:
        return 0.0
    return ((l_max - l_cache) - length) / l_cache


@given(
    st.integers(0, 2**16),
    st.integers(2, 9),
    st.integers(1, 4),
    st.lists(st.floats(-5, 5, width=32), min_size=B, max_size=B),
)
def test_advantage_is_group_zscore_of_shaped_reward(seed, l_max, l_cache, rewards):
    """Â_i = z-score within the group of R_i + R_length(y_i), by a numpy loop."""
    l_cache = min(l_cache, l_max)
    rollout, _ = random_batch(seed, B, T, K)
    rollout = rollout.replace(rewards=jnp.asarray(rewards, jnp.float32))
    cfg = DAPO.Config(max_response_length=l_max, overlong_buffer=l_cache, dynamic_sampling=False)
    adv, _ = DAPO.advantages(rollout, cfg, ())
    lengths = np.asarray(rollout.loss_mask).sum(1)
    truncated = np.asarray(rollout.truncated)
    shaped = np.array([
        r + naive_penalty(n, t, l_max, l_cache) for r, n, t in zip(rewards, lengths, truncated)
    ], np.float64)
    expected = np.empty(B)
    for g in range(B // K):
        block = shaped[g * K:(g + 1) * K]
        expected[g * K:(g + 1) * K] = (block - block.mean()) / (block.std(ddof=1) + cfg.std_eps)
    row = np.asarray(ops.sequence_mean(adv, rollout.loss_mask))
    np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)


@given(st.integers(0, 2**16), st.sets(st.integers(0, B // K - 1), max_size=B // K - 1))
def test_dynamic_sampling_equals_training_on_kept_groups_only(seed, degenerate):
    """Dropping the groups the record's filter rejects (sample_weight 0, as
    `row_transforms.drop_degenerate_groups` does, + zero advantage) gives the same loss as
    the batch that never contained them, and no gradient on the dropped rows, although
    overlong shaping makes their shaped rewards unequal."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=tuple(sorted(degenerate)))
    cfg = DAPO.Config(max_response_length=6, overlong_buffer=4)
    filtered = row_transforms.drop_degenerate_groups(rollout)
    keep = np.asarray(DAPO.group_filter(rollout, cfg))
    np.testing.assert_array_equal(np.asarray(filtered.sample_weight) > 0,
                                  np.repeat(keep, K) & (np.asarray(rollout.sample_weight) > 0))
    adv, _ = DAPO.advantages(filtered, cfg, ())
    loss, _, grads = jitted("dapo", cfg)(stats, filtered, adv)

    dropped = np.repeat([g in degenerate for g in range(B // K)], K)
    assert np.all(np.asarray(filtered.sample_weight)[dropped] == 0)
    assert np.all(np.asarray(adv)[dropped] == 0)
    assert np.all(np.asarray(grads.logprobs)[dropped] == 0)

    keep = np.flatnonzero(~dropped)
    sub_rollout = rollout.select_rows(keep)
    sub_stats = jax.tree.map(lambda x: x[keep], stats)
    sub_loss, _, sub_grads = loss_and_grad(DAPO, cfg, sub_stats, sub_rollout)
    np.testing.assert_allclose(loss, sub_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads.logprobs)[keep], sub_grads.logprobs, rtol=1e-5, atol=1e-7)


@given(st.floats(0.05, 0.35), st.floats(-0.35, -0.05))
def test_clip_higher_bounds(log_up, log_down):
    """A > 0: gradient while ρ < 1 + ε_high = 1.28, none above. A < 0: none below 1 − ε_low = 0.8."""
    rollout, stats = random_batch(3, B, T, K)
    cfg = DAPO.Config(overlong_shaping=False)
    mask = np.asarray(rollout.loss_mask)
    for sign, shift, bound in ((1.0, log_up, np.log(1.28)), (-1.0, log_down, np.log(0.8))):
        assume(abs(shift - bound) > 1e-3)  # away from the float32 rounding band at the bound
        adv = jnp.where(rollout.loss_mask, sign, 0.0)
        moved = rollout.replace(
            behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs - shift, 0.0)
        )
        _, _, grads = jitted("dapo", cfg)(stats, moved, adv)
        g = np.asarray(grads.logprobs)[mask]
        outside = shift > bound if sign > 0 else shift < bound
        if outside:
            assert np.all(g == 0)
        else:
            assert np.all(sign * g < 0)


@given(st.integers(0, 2**16))
def test_on_policy_gradient_is_token_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = DAPO.Config()
    adv, _ = DAPO.advantages(rollout, cfg, ())
    _, metrics, grads = jitted("dapo", cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16))
def test_reduces_to_grpo_without_kl(seed):
    """Symmetric clip, seq-mean-token-mean, no shaping, no filtering: DAPO = GRPO with kl_coef = 0."""
    rollout, stats = random_batch(seed, B, T, K, equal_reward_groups=(1,))
    dapo_cfg = DAPO.Config(
        clip_eps_high=0.2, aggregation="seq-mean-token-mean", overlong_shaping=False, dynamic_sampling=False,
    )
    grpo_cfg = GRPO.Config(kl_coef=0.0)
    loss, _, grads = loss_and_grad(DAPO, dapo_cfg, stats, rollout)
    ref_loss, _, ref_grads = loss_and_grad(GRPO, grpo_cfg, stats, rollout)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-8)


@given(st.integers(0, 2**16), st.sets(st.integers(0, B // K - 1)))
def test_group_filter_keeps_the_groups_whose_outcome_rewards_differ(seed, degenerate):
    """The record's group_filter: a [G] bool mask, True where the group's (unshaped)
    rewards differ; None when dynamic sampling is off, so the trainer draws one batch."""
    rollout, _ = random_batch(seed, B, T, K, equal_reward_groups=tuple(sorted(degenerate)))
    keep = DAPO.group_filter(rollout, DAPO.Config())
    assert keep.shape == (B // K,) and keep.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(keep), [g not in degenerate for g in range(B // K)])
    assert DAPO.group_filter(rollout, DAPO.Config(dynamic_sampling=False)) is None


def test_group_filter_follows_dapos_loss_when_paired_with_another_estimator():
    """`--algo dapo --advantage grpo`: the filter belongs to DAPO's loss and reads
    dynamic_sampling from the flat Config."""
    rollout, _ = random_batch(0, B, T, K, equal_reward_groups=(0,))
    paired = get_algorithm("dapo", advantage="grpo")
    np.testing.assert_array_equal(np.asarray(paired.group_filter(rollout, paired.Config())), [False, True])
    assert paired.group_filter(rollout, paired.Config(dynamic_sampling=False)) is None
    assert "dynamic_sampling" not in DAPO.estimator_fields


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -1.0}, "dapo: --clip-eps-low must be >= 0.0; got -1.0"),
    ({"clip_eps_high": -0.1}, "dapo: --clip-eps-high must be >= 0.0"),
    ({"max_response_length": 0}, "dapo: --max-response-length must be >= 1"),
    ({"overlong_buffer": -1}, "dapo: --overlong-buffer must be >= 0"),
    ({"overlong_penalty_factor": -1.0}, "dapo: --overlong-penalty-factor must be >= 0.0"),
    ({"kl_coef": float("nan")}, "dapo: --kl-coef must be finite"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DAPO.Config(**overrides)
