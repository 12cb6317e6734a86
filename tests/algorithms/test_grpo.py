"""GRPO's invariants (Shao et al. 2024, arXiv:2402.03300)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10
rewards_strategy = st.lists(st.floats(-100, 100, width=32), min_size=B, max_size=B).map(
    lambda xs: jnp.asarray(xs, jnp.float32)
)


def _with_rewards(rewards):
    rollout, _ = random_batch(0, B, T, K)
    return rollout.replace(rewards=rewards)


def _advantage_per_row(rollout, cfg):
    adv, _ = GRPO.advantages(rollout, cfg, ())
    return np.asarray(adv).sum(1) / np.maximum(np.asarray(rollout.loss_mask).sum(1), 1)


@given(rewards_strategy)
def test_advantages_have_zero_mean_per_group(rewards):
    rollout = _with_rewards(rewards)
    per_row = _advantage_per_row(rollout, GRPO.Config()).reshape(-1, K)
    # Exact zero up to float32 rounding, relative to the advantages' scale.
    assert np.all(np.abs(per_row.mean(1)) <= 1e-5 * (1 + np.abs(per_row).max(1)))


@given(rewards_strategy, st.floats(-50, 50), st.floats(0.1, 10))
def test_advantages_invariant_to_group_shift_and_scale(rewards, shift, scale):
    rollout = _with_rewards(rewards)
    # One shift per group and one positive scale for the whole batch.
    shifts = jnp.repeat(jnp.arange(B // K, dtype=jnp.float32) * shift, K)
    moved = rollout.replace(rewards=scale * rewards + shifts)
    cfg = GRPO.Config(std_eps=1e-12)  # negligible next to the std of the decided groups
    spread = np.ptp(np.asarray(rewards).reshape(-1, K), axis=1)
    decided = np.repeat(spread > 1e-2, K)
    np.testing.assert_allclose(
        _advantage_per_row(moved, cfg)[decided], _advantage_per_row(rollout, cfg)[decided],
        rtol=1e-3, atol=1e-3,
    )


def test_all_equal_group_gets_zero_advantage():
    rollout = _with_rewards(jnp.full((B,), 3.0))
    assert np.all(_advantage_per_row(rollout, GRPO.Config()) == 0)


@given(st.integers(0, 2**16), st.sampled_from(ops.AGGREGATIONS))
def test_on_policy_gradient_is_reinforce(seed, aggregation):
    """At π_old = π_θ the ratio is 1, nothing is clipped, and (with kl_coef = 0) the
    gradient is the REINFORCE gradient with the same advantages and weights."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = GRPO.Config(kl_coef=0.0, aggregation=aggregation)
    adv, _ = GRPO.advantages(rollout, cfg, ())
    _, metrics, grads = loss_and_grad(GRPO, cfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, aggregation), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16))
def test_kl_term_has_zero_gradient_at_the_reference(seed):
    """k3 is minimised at π_θ = π_ref: with kl_coef > 0 the gradient there is still REINFORCE's."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats).replace(ref_logprobs=stats.logprobs)
    cfg = GRPO.Config(kl_coef=0.5)
    adv, _ = GRPO.advantages(rollout, cfg, ())
    loss, metrics, grads = loss_and_grad(GRPO, cfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, cfg.aggregation), rtol=1e-5, atol=1e-7)
    assert abs(metrics["kl"]) < 1e-6


def test_clipping_stops_the_gradient_past_the_bound():
    """A token with A > 0 and ρ > 1 + ε contributes no gradient; below the bound it does."""
    rollout, stats = random_batch(3, B, T, K)
    cfg = GRPO.Config(kl_coef=0.0)
    adv = jnp.where(rollout.loss_mask, 1.0, 0.0)
    far = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs - 1.0, 0.0))
    _, metrics, grads = loss_and_grad(GRPO, cfg, stats, far, adv=adv)
    assert np.all(np.asarray(grads.logprobs) == 0)
    assert metrics["clip_frac"] == 1
    near = rollout.replace(behaviour_logprobs=jnp.where(rollout.loss_mask, stats.logprobs - 0.1, 0.0))
    _, _, grads = loss_and_grad(GRPO, cfg, stats, near, adv=adv)
    assert np.all(np.asarray(grads.logprobs)[np.asarray(rollout.loss_mask)] < 0)


def test_config_defaults_are_the_papers():
    cfg = GRPO.Config()
    assert (cfg.clip_bounds, cfg.kl_coef, cfg.kl_estimator, cfg.aggregation) == ((0.2, 0.2), 0.04, "k3", "seq-mean-token-mean")
    assert GRPO.required(cfg) == {"ref_logprobs"}
    assert GRPO.required(GRPO.Config(kl_coef=0.0)) == frozenset()


@pytest.mark.parametrize("field, value, message", [
    ("clip_eps_low", -1.0, "--clip-eps-low must be >= 0.0"),
    ("kl_coef", -0.1, "--kl-coef must be >= 0.0"),
    ("dual_clip", 0.5, "--dual-clip must be > 1.0"),
    ("std_eps", 0.0, "--std-eps must be > 0.0"),
    ("aggregation", "mean", "--aggregation must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        GRPO.Config(**{field: value})


def test_estimator_pairs_with_another_loss():
    """grpo's estimator fields are the only ones a paired loss drops or keeps."""
    paired = get_algorithm("sapo", advantage="grpo")
    names = {f.name for f in dataclasses.fields(paired.Config)}
    assert {"scale_rewards", "std_eps", "std_ddof", "tau_pos"} <= names
    assert "clip_eps_low" not in names and "kl_coef" in names
