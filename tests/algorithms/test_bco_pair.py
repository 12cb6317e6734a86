"""BCO-pair invariants (Jung et al. 2024, arXiv:2404.04656)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

BCO = get_algorithm("bco_pair")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def np_rewards(rollout, logp, beta):
    mask = np.asarray(rollout.loss_mask)
    h = beta * np.where(mask, np.asarray(logp) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    c = np.where(r[:, 0] > r[:, 1], 0, 1) + 2 * np.arange(B // 2)
    return h[c], h[c ^ 1], c


@given(seeds, st.floats(0.05, 2.0))
def test_binary_cross_entropy_with_chosen_one_and_rejected_zero(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(BCO, BCO.Config(beta=beta), stats, rollout)
    r_w, r_l, c = np_rewards(rollout, stats.logprobs, beta)
    expected = np.logaddexp(0, -r_w) + np.logaddexp(0, r_l)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
    mask = np.asarray(rollout.loss_mask)
    g = np.asarray(grads.logprobs)
    assert np.all(g[c][mask[c]] < 0) and np.all(g[c ^ 1][mask[c ^ 1]] > 0)


@given(st.lists(st.integers(0, 2**16), min_size=1, max_size=4))
def test_running_shift_is_the_mean_of_batch_mean_rewards(seeds_):
    cfg = BCO.Config(running_shift=True)
    state = BCO.init_state(cfg)
    batch_means = []
    for seed in seeds_:
        rollout, stats = random_batch(seed, B, T, 2)
        adv, state = BCO.advantages(rollout, cfg, state)
        r_w, r_l, _ = np_rewards(rollout, rollout.behaviour_logprobs, cfg.beta)
        batch_means.append(np.concatenate([r_w, r_l]).mean())
    delta = np.mean(batch_means)
    np.testing.assert_allclose(state["shift"], delta, rtol=1e-4, atol=1e-6)
    loss, metrics, _ = loss_and_grad(BCO, cfg, stats, rollout, state=state, adv=adv)
    r_w, r_l, _ = np_rewards(rollout, stats.logprobs, cfg.beta)
    expected = np.logaddexp(0, -(r_w - delta)) + np.logaddexp(0, r_l - delta)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["reward_shift"], delta, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("beta", -0.1, "--beta must be > 0.0"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        BCO.Config(**{field: value})
