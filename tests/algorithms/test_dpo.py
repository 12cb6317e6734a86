"""DPO's invariants (Rafailov et al. 2023, arXiv:2305.18290)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.experience.row_transforms import make_pairs
from rlzoo.testing import loss_and_grad, random_batch

DPO = get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)
betas = st.floats(0.01, 2.0)


def np_pairs(rollout, logp):
    """(h_w, h_l, decided, chosen_row, rejected_row) by a direct loop."""
    mask = np.asarray(rollout.loss_mask)
    h = np.where(mask, np.asarray(logp) - np.asarray(rollout.ref_logprobs), 0.0).sum(1)
    r = np.asarray(rollout.rewards)
    out = []
    for g in range(len(r) // 2):
        i, j = 2 * g, 2 * g + 1
        c, l = (i, j) if r[i] >= r[j] else (j, i)
        out.append((h[c], h[l], r[i] != r[j], c, l))
    return [np.array(x) for x in zip(*out)]


def softplus(x):
    return np.logaddexp(0.0, x)


@given(seeds, betas)
def test_at_the_reference_loss_is_log2_and_gradient_is_half_beta(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    stats = stats.replace(logprobs=rollout.ref_logprobs)
    loss, _, grads = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    _, _, decided, c, l = np_pairs(rollout, stats.logprobs)
    n_pairs = B // 2
    np.testing.assert_allclose(loss, np.log(2.0) * decided.sum() / n_pairs, rtol=1e-6)
    mask = np.asarray(rollout.loss_mask)
    expected = np.zeros((B, T))
    expected[c[decided]] = -beta / 2 / n_pairs
    expected[l[decided]] = beta / 2 / n_pairs
    np.testing.assert_allclose(grads.logprobs, np.where(mask, expected, 0.0), rtol=1e-5, atol=1e-8)


@given(seeds, betas, st.floats(0.0, 0.4))
def test_loss_is_the_smoothed_logistic_of_the_margin(seed, beta, eps):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(DPO, DPO.Config(beta=beta, label_smoothing=eps), stats, rollout)
    h_w, h_l, decided, _, _ = np_pairs(rollout, stats.logprobs)
    z = beta * (h_w - h_l)
    expected = np.sum(decided * ((1 - eps) * softplus(-z) + eps * softplus(z))) / (B // 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@given(seeds, st.floats(-5.0, 5.0))
def test_policy_enters_only_through_the_margin(seed, shift):
    """Adding the same log-likelihood to both responses of every pair changes nothing."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    first = np.argmax(mask, axis=1)
    bump = np.zeros((B, T), np.float32)
    bump[np.arange(B), first] = np.where(mask.any(1), shift, 0.0)
    moved = stats.replace(logprobs=stats.logprobs + jnp.asarray(bump))
    loss, _, grads = loss_and_grad(DPO, DPO.Config(), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(), moved, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-4, atol=1e-7)


@given(seeds, betas)
def test_swapping_chosen_and_rejected_negates_the_margin(seed, beta):
    """L(−Δ) − L(Δ) = βΔ for the logistic loss, pair by pair."""
    rollout, stats = random_batch(seed, B, T, 2)
    swapped = rollout.replace(rewards=-rollout.rewards)
    cfg = DPO.Config(beta=beta)
    loss, _, _ = loss_and_grad(DPO, cfg, stats, rollout)
    loss_swapped, _, _ = loss_and_grad(DPO, cfg, stats, swapped)
    h_w, h_l, decided, _, _ = np_pairs(rollout, stats.logprobs)
    np.testing.assert_allclose(loss_swapped - loss, np.sum(decided * beta * (h_w - h_l)) / (B // 2), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("beta", float("nan"), "--beta must be finite"),
    ("label_smoothing", -0.1, "--label-smoothing must be >= 0.0"),
    ("pair_mode", "random", "--pair-mode must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DPO.Config(**{field: value})


@pytest.mark.parametrize("pair_mode", ["best_vs_worst", "all_pairs"])
def test_groups_of_k_become_pairs_by_the_configured_pair_mode(pair_mode):
    """The record's `prepare` hook cuts groups of K = 4 into pairs by `pair_mode`
    (one pair per group, or all K(K − 1)/2), the rows of the pair batch being
    those of `make_pairs`; groups of two pass through unchanged."""
    rollout, _ = random_batch(0, 16, T, 4)
    cfg = DPO.Config(pair_mode=pair_mode)
    pairs = DPO.prepare(rollout, cfg, DPO.init_state(cfg))
    assert pairs.group_size == 2
    assert pairs.num_groups == {"best_vs_worst": 4, "all_pairs": 4 * 6}[pair_mode]
    expected = make_pairs(rollout, pair_mode)
    np.testing.assert_array_equal(pairs.tokens, expected.tokens)
    np.testing.assert_array_equal(pairs.rewards, expected.rewards)
    already, _ = random_batch(0, B, T, 2)
    assert DPO.prepare(already, cfg, ()) is already
    assert DPO.Config().pair_mode == "best_vs_worst"
