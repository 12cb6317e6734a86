"""POWER-DL's invariants (Rashidinejad & Tian 2024, arXiv:2412.09544)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch

POWER, SIMPO = get_algorithm("power_dl"), get_algorithm("simpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def np_scores(rollout, logp):
    mask = np.asarray(rollout.loss_mask)
    s = (np.where(mask, np.asarray(logp), 0).sum(1) / np.maximum(mask.sum(1), 1)).reshape(-1, 2)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    first = r[:, 0] > r[:, 1]
    return np.where(first, s[:, 0], s[:, 1]), np.where(first, s[:, 1], s[:, 0])


@given(seeds, st.floats(0.5, 4.0))
def test_fixed_labels_without_robust_term_is_simpo_with_zero_margin(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(POWER, POWER.Config(beta=beta, eta=0.0, label_step=0.0), stats, rollout)
    loss2, _, grads2 = loss_and_grad(SIMPO, SIMPO.Config(beta=beta, gamma=0.0), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.0, 1.0), st.floats(0.0, 3.0))
def test_labels_move_by_a_convex_step_and_weight_the_loss(seed, gamma, eta):
    rollout, stats = random_batch(seed, B, T, 2)
    cfg = POWER.Config(label_step=gamma, eta=eta, num_labels=64)
    state = POWER.init_state(cfg)
    adv, state1 = POWER.advantages(rollout, cfg, state)
    w, l = np_scores(rollout, rollout.behaviour_logprobs)
    target = 1 / (1 + np.exp(-cfg.beta * (w - l)))
    labels = np.asarray(state1["labels"])[np.arange(B // 2)]
    np.testing.assert_allclose(labels, (1 - gamma) + gamma * target, rtol=1e-5)
    assert np.all((labels >= 0) & (labels <= 1))
    # second step: the loss uses the updated soft labels
    adv2, _ = POWER.advantages(rollout, cfg, state1)
    loss, _, _ = loss_and_grad(POWER, cfg, stats, rollout, state=state1, adv=adv2)
    s_w, s_l = np_scores(rollout, stats.logprobs)
    z = cfg.beta * (s_w - s_l)
    per_pair = labels * np.logaddexp(0, -z) + (1 - labels) * np.logaddexp(0, z) - eta * cfg.beta * s_w
    np.testing.assert_allclose(loss, per_pair.mean(), rtol=1e-4, atol=1e-5)


@given(seeds)
def test_full_label_step_stops_the_preference_gradient(seed):
    """With γ = 1 the label becomes the model's own preference σ(z); at that
    policy the preference gradient σ(z) − l vanishes (η = 0)."""
    rollout, stats = random_batch(seed, B, T, 2)
    rollout = on_policy(rollout, stats)
    cfg = POWER.Config(label_step=1.0, eta=0.0)
    _, state = POWER.advantages(rollout, cfg, POWER.init_state(cfg))
    adv, _ = POWER.advantages(rollout, cfg, state)
    _, metrics, grads = loss_and_grad(POWER, cfg, stats, rollout, state=state, adv=adv)
    assert np.max(np.abs(grads.logprobs)) < 1e-6
    assert float(metrics["label_mean"]) < 1.0


def test_reference_free():
    rollout, stats = random_batch(1, B, T, 2)
    loss, _, _ = loss_and_grad(POWER, POWER.Config(), stats, rollout)
    loss2, _, _ = loss_and_grad(POWER, POWER.Config(), stats, rollout.replace(ref_logprobs=jnp.zeros((B, T))))
    np.testing.assert_allclose(loss, loss2)


@pytest.mark.parametrize("field, value, message", [
    ("label_step", 1.5, "--label-step must be <= 1.0"),
    ("eta", -1.0, "--eta must be >= 0.0"),
    ("num_labels", 0, "--num-labels must be >= 1"),
    ("beta", 0.0, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        POWER.Config(**{field: value})
