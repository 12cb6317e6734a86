"""REBEL's invariants (Gao et al. 2024, arXiv:2404.16767)."""

import functools
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, on_policy, random_batch

REBEL = get_algorithm("rebel")
RLOO = get_algorithm("rloo")
B, T = 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
etas = st.sampled_from([0.5, 1.0, 3.0])
kl_coefs = st.sampled_from([0.0, 0.05])


def _kl_penalised_rewards(rollout, kl_coef):
    """r − β Σ_t (log π_old − log π_ref) over trained tokens, in numpy."""
    mask = np.asarray(rollout.loss_mask)
    kl = np.where(mask, np.asarray(rollout.behaviour_logprobs) - np.asarray(rollout.ref_logprobs), 0.0).sum(1)
    return np.asarray(rollout.rewards, np.float64) - kl_coef * kl


def _with_sequence_log_ratio(rollout, stats, target):
    """Current log-probs equal to the behaviour ones except on each row's first
    trained token, so that Σ_t (log π_θ − log π_old) = target[row]."""
    mask = np.asarray(rollout.loss_mask)
    first = np.zeros_like(mask)
    first[np.arange(mask.shape[0]), mask.argmax(1)] = mask.any(1)
    logp = np.asarray(rollout.behaviour_logprobs) + np.where(first, np.asarray(target)[:, None], 0.0)
    return stats.replace(logprobs=jnp.asarray(np.where(mask, logp, np.asarray(stats.logprobs)), jnp.float32))


def _naive_loss(rollout, stats, eta, kl_coef, k):
    """Mean over all pairs i < j of each group, by explicit loops."""
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs), 0.0).sum(1)
    r = _kl_penalised_rewards(rollout, kl_coef)
    terms = []
    for g in range(len(r) // k):
        for i, j in itertools.combinations(range(g * k, (g + 1) * k), 2):
            terms.append(((s[i] - s[j]) - eta * (r[i] - r[j])) ** 2)
    return np.mean(terms)


@given(seeds, etas, kl_coefs, st.sampled_from([2, 4]))
def test_matches_naive_pair_loop(seed, eta, kl_coef, k):
    rollout, stats = random_batch(seed, B, T, k)
    cfg = REBEL.Config(eta=eta, kl_coef=kl_coef)
    loss, _, _ = jitted(REBEL, cfg)(stats, rollout)
    np.testing.assert_allclose(loss, _naive_loss(rollout, stats, eta, kl_coef, k), rtol=2e-5)


@given(seeds, etas, kl_coefs, st.lists(st.floats(-5, 5), min_size=B // 2, max_size=B // 2))
def test_zero_loss_when_log_ratio_gaps_equal_eta_reward_gaps(seed, eta, kl_coef, offsets):
    """s_θ(y) − s_θ(y') = η (r'(y) − r'(y')) is the regression's exact solution:
    loss and gradient vanish, whatever per-prompt offset the log-ratios carry."""
    rollout, stats = random_batch(seed, B, T, 2)
    target = eta * _kl_penalised_rewards(rollout, kl_coef) + np.repeat(offsets, 2)
    stats = _with_sequence_log_ratio(rollout, stats, target)
    loss, _, grads = jitted(REBEL, REBEL.Config(eta=eta, kl_coef=kl_coef))(stats, rollout)
    assert loss < 1e-8
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=1e-5)


@given(seeds, st.lists(st.floats(-100, 100), min_size=B // 2, max_size=B // 2))
def test_invariant_to_prompt_dependent_reward_shift(seed, shifts):
    rollout, stats = random_batch(seed, B, T, 2)
    moved = rollout.replace(rewards=rollout.rewards + jnp.repeat(jnp.asarray(shifts, jnp.float32), 2))
    cfg = REBEL.Config()
    loss, _, grads = jitted(REBEL, cfg)(stats, rollout)
    loss2, _, grads2 = jitted(REBEL, cfg)(stats, moved)
    np.testing.assert_allclose(loss2, loss, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(grads2.logprobs, grads.logprobs, rtol=1e-3, atol=1e-3)


@given(seeds, etas, kl_coefs)
def test_on_policy_gradient_is_rloo_with_partner_baseline(seed, eta, kl_coef):
    """At π_θ = π_t the log-ratios vanish and ∇ = −(2η/P) Δr' ∇Δlog π: with
    P = B/2 pairs this is 4η times RLOO's gradient for K = 2 (same KL penalty)."""
    rollout, stats = random_batch(seed, B, T, 2)
    rollout = on_policy(rollout, stats)
    _, _, grads = jitted(REBEL, REBEL.Config(eta=eta, kl_coef=kl_coef))(stats, rollout)
    _, _, parent = jitted(RLOO, RLOO.Config(kl_coef=kl_coef))(stats, rollout)
    np.testing.assert_allclose(grads.logprobs, 4 * eta * parent.logprobs, rtol=1e-4, atol=1e-6)


def test_dropped_row_removes_its_pairs():
    """sample_weight 0 on a row removes every pair it is in; the loss is then
    their sum over N_seq (K − 1)/2 with N_seq the kept rows (the zoo's pair
    normaliser, exact under microbatching)."""
    rollout, stats = random_batch(3, B, T, 4)
    weights = np.ones(B, np.float32)
    weights[1] = 0.0
    dropped = rollout.replace(sample_weight=jnp.asarray(weights))
    cfg = REBEL.Config(kl_coef=0.0)
    loss, _, grads = jitted(REBEL, cfg)(stats, dropped)
    assert np.all(np.asarray(grads.logprobs)[1] == 0)
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs), 0.0).sum(1)
    r = np.asarray(rollout.rewards, np.float64)
    kept = [(i, j) for g in range(2) for i, j in itertools.combinations(range(4 * g, 4 * g + 4), 2) if 1 not in (i, j)]
    total = sum(((s[i] - s[j]) - (r[i] - r[j])) ** 2 for i, j in kept)
    np.testing.assert_allclose(loss, total / (7 * 3 / 2), rtol=2e-5)


@pytest.mark.parametrize("field, value, message", [
    ("eta", 0.0, "--eta must be > 0.0"),
    ("kl_coef", -0.1, "--kl-coef must be >= 0.0"),
    ("kl_estimator", "k4", "--kl-estimator must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        REBEL.Config(**{field: value})


@given(seeds, st.sampled_from(["k1", "k2", "k3"]), st.sampled_from([2, 4]))
def test_targets_are_the_centred_kl_penalised_rewards(seed, estimator, k):
    """row_targets: r − β_KL Σ_t KL̂_t(π_t ‖ π_ref) centred within the group, with the
    configured estimator (k1 = log π_t − log π_ref, the default); the logged
    advantage is the same value on each row's trained tokens."""
    rollout, _ = random_batch(seed, B, T, k)
    cfg = REBEL.Config(kl_estimator=estimator)
    targets, _ = REBEL.advantages(rollout, cfg, ())
    mask = np.asarray(rollout.loss_mask)
    log_ratio = np.asarray(rollout.behaviour_logprobs, np.float64) - np.asarray(rollout.ref_logprobs)
    per_token = {"k1": log_ratio, "k2": 0.5 * log_ratio**2, "k3": np.expm1(-log_ratio) + log_ratio}[estimator]
    penalised = np.asarray(rollout.rewards, np.float64) - cfg.kl_coef * np.where(mask, per_token, 0.0).sum(1)
    centred = (penalised.reshape(-1, k) - penalised.reshape(-1, k).mean(1, keepdims=True)).reshape(-1)
    expected = np.where(mask.any(1), centred, 0.0)
    np.testing.assert_allclose(targets["row_targets"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets["advantages"], np.where(mask, expected[:, None], 0.0), rtol=1e-5, atol=1e-5)


def test_kl_penalty_needs_the_reference_only_when_on():
    assert REBEL.required(REBEL.Config()) == {"ref_logprobs"}
    assert REBEL.required(REBEL.Config(kl_coef=0.0)) == frozenset()
