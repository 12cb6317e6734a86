"""MODPO's invariants (Zhou et al. 2023, arXiv:2310.03708)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

MODPO, DPO = get_algorithm("modpo"), get_algorithm("dpo")
B, T, C = 8, 10, 2
seeds = st.integers(0, 2**16)


@given(seeds, st.floats(0.02, 1.0))
def test_one_hot_weight_on_the_preference_is_dpo(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = MODPO.Config(beta=beta, preference_weight=1.0, component_weights=(0.0, 0.0))
    loss, _, grads = loss_and_grad(MODPO, cfg, stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.1, 1.0), st.floats(-3, 3), st.floats(-3, 3))
def test_margin_vanishes_when_other_rewards_agree(seed, w_k, a, b):
    """Equal component rewards within each pair: MODPO is DPO with β/w_k."""
    rollout, stats = random_batch(seed, B, T, 2)
    comps = np.repeat(np.asarray(rollout.reward_components)[::2], 2, axis=0)
    rollout = rollout.replace(reward_components=jnp.asarray(comps))
    cfg = MODPO.Config(beta=0.1, preference_weight=w_k, component_weights=(a, b))
    loss, _, grads = loss_and_grad(MODPO, cfg, stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=0.1 / w_k), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-8)


@given(seeds, st.floats(0.1, 1.0), st.floats(-2, 2), st.floats(-2, 2))
def test_closed_form(seed, w_k, a, b):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = MODPO.Config(preference_weight=w_k, component_weights=(a, b))
    loss, _, _ = loss_and_grad(MODPO, cfg, stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1).reshape(-1, 2)
    other = (np.asarray(rollout.reward_components) @ np.array([a, b])).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    z = sign * (0.1 * (h[:, 0] - h[:, 1]) - (other[:, 0] - other[:, 1])) / w_k
    np.testing.assert_allclose(loss, np.sum(np.logaddexp(0, -z)) / (B // 2), rtol=1e-5)


def test_default_weights_split_the_remainder_evenly():
    rollout, stats = random_batch(0, B, T, 2, num_components=C)
    loss, _, _ = loss_and_grad(MODPO, MODPO.Config(preference_weight=0.4), stats, rollout)
    loss2, _, _ = loss_and_grad(MODPO, MODPO.Config(preference_weight=0.4, component_weights=(0.3, 0.3)), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("preference_weight", 0.0, "--preference-weight must be > 0.0"),
    ("component_weights", (0.5, float("inf")), "--component-weights must hold finite numbers"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MODPO.Config(**{field: value})
