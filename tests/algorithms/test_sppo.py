"""SPPO's invariants (Wu et al. 2024, arXiv:2405.00675)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, first_trained_token, loss_and_grad, on_policy, random_batch

SPPO = get_algorithm("sppo")
REINFORCE = get_algorithm("reinforce")
K, B, T = 4, 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
etas = st.sampled_from([1.0, 10.0, 1000.0])
rewards_strategy = st.lists(st.floats(-20, 20, width=32), min_size=B, max_size=B).map(
    lambda xs: jnp.asarray(xs, jnp.float32)
)


def _naive_win_rates(rewards, k, hard=False):
    """P̂_i = 1/K Σ_j P(y_i ≻ y_j), j over the whole group including i, by loops."""
    r = np.asarray(rewards, np.float64)
    rates = np.zeros_like(r)
    for g in range(len(r) // k):
        rows = range(g * k, (g + 1) * k)
        for i in rows:
            if hard:
                rates[i] = np.mean([1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0 for j in rows])
            else:
                rates[i] = np.mean([1.0 / (1.0 + np.exp(r[j] - r[i])) for j in rows])
    return rates


def _row_targets(rollout, cfg):
    """The per-row targets, checked against the logged [B, T] advantage (the same value on every trained token)."""
    targets, _ = SPPO.advantages(rollout, cfg, ())
    adv, rows = np.asarray(targets["advantages"]), np.asarray(targets["row_targets"])
    mask = np.asarray(rollout.loss_mask)
    np.testing.assert_array_equal(adv, np.where(mask, rows[:, None], 0.0))
    return rows


@given(rewards_strategy, st.booleans())
def test_targets_are_win_rate_minus_half_and_sum_to_zero(rewards, hard):
    rollout, _ = random_batch(0, B, T, K)
    rollout = rollout.replace(rewards=rewards)
    cfg = SPPO.Config(win_rate="hard" if hard else "bradley-terry")
    targets = _row_targets(rollout, cfg)
    np.testing.assert_allclose(targets, _naive_win_rates(rewards, K, hard) - 0.5, atol=1e-6)
    # Symmetric preferences, P(i ≻ j) + P(j ≻ i) = 1: the group's targets sum to zero.
    np.testing.assert_allclose(targets.reshape(-1, K).sum(1), 0.0, atol=1e-5)
    assert np.all(np.abs(targets) <= 0.5 * (K - 1) / K + 1e-6)


@given(seeds, etas)
def test_zero_loss_at_the_multiplicative_weights_step(seed, eta):
    """log π_θ(y)/π_t(y) = η (P̂(y ≻ π_t) − ½) for every row is the exact minimiser."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = SPPO.Config(eta=eta)
    target = eta * (_naive_win_rates(rollout.rewards, K) - 0.5)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    logp = np.asarray(rollout.behaviour_logprobs) + np.where(first, target[:, None], 0.0)
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    loss, _, grads = jitted(SPPO, cfg)(stats, rollout)
    assert loss <= 1e-9 * max(eta, 1.0) ** 2
    np.testing.assert_allclose(grads.logprobs, 0.0, atol=1e-5 * max(eta, 1.0))


@given(seeds, etas)
def test_on_policy_gradient_is_reinforce_on_the_win_rate(seed, eta):
    """At π_θ = π_t the gradient is 2η times REINFORCE's (no baseline) with
    advantage P̂ − ½ (win rates from the naive loop)."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    adv = jnp.where(rollout.loss_mask, jnp.asarray(_naive_win_rates(rollout.rewards, K) - 0.5, jnp.float32)[:, None], 0.0)
    _, _, grads = jitted(SPPO, SPPO.Config(eta=eta))(stats, rollout)
    _, _, parent = loss_and_grad(REINFORCE, REINFORCE.Config(baseline="none"), stats, rollout, adv=adv)
    np.testing.assert_allclose(grads.logprobs, 2 * eta * parent.logprobs, rtol=1e-4, atol=1e-6 * eta)


@given(seeds, st.sampled_from([0.001, 0.01, 0.1]))
def test_given_hard_probabilities_are_half_trl_sppo_hard(seed, beta):
    """With the win rates given as 1 (winner) and 0 (loser) in pairs, the loss is
    half of TRL's sppo_hard, mean over pairs of (a − 1/(2β))² + (b + 1/(2β))²
    with a, b the winner's and loser's log-ratios (TRL sums the two terms)."""
    rollout, stats = random_batch(seed, B, T, 2)
    rollout = rollout.replace(rewards=jnp.tile(jnp.asarray([1.0, 0.0]), B // 2))
    loss, _, _ = jitted(SPPO, SPPO.Config(eta=1.0 / beta, win_rate="given"))(stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs), 0.0).sum(1)
    a, b = s[0::2], s[1::2]
    trl = np.mean((a - 0.5 / beta) ** 2 + (b + 0.5 / beta) ** 2)
    np.testing.assert_allclose(loss, 0.5 * trl, rtol=1e-5)


@given(seeds)
def test_rows_move_independently(seed):
    """Unlike DPO/IPO the loss is not a function of the pair margin: changing
    one row's log-probs leaves the gradient of every other row unchanged."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = SPPO.Config(eta=10.0)
    _, _, grads = jitted(SPPO, cfg)(stats, rollout)
    moved = stats.replace(logprobs=stats.logprobs.at[0].add(-0.7))
    _, _, grads2 = jitted(SPPO, cfg)(moved, rollout)
    np.testing.assert_allclose(grads2.logprobs[1:], grads.logprobs[1:], rtol=1e-6)
    assert not np.allclose(grads2.logprobs[0], grads.logprobs[0])


@given(seeds, st.sampled_from([0.001, 0.1]))
def test_given_hard_probabilities_reduce_to_registered_sppo_hard(seed, beta):
    """Against the zoo's TRL-parity `sppo_hard` (its reference set to π_t):
    half its loss and gradient (it sums the two rows' terms, SPPO averages rows)."""
    hard = get_algorithm("sppo_hard")
    rollout, stats = random_batch(seed, B, T, 2)
    rollout = rollout.replace(rewards=jnp.tile(jnp.asarray([0.0, 1.0]), B // 2))
    loss, _, grads = jitted(SPPO, SPPO.Config(eta=1.0 / beta, win_rate="given"))(stats, rollout)
    as_hard = rollout.replace(ref_logprobs=rollout.behaviour_logprobs)
    loss2, _, grads2 = jitted(hard, hard.Config(beta=beta))(stats, as_hard)
    np.testing.assert_allclose(loss, 0.5 * loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, 0.5 * grads2.logprobs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("field, value, message", [
    ("eta", 0.0, "--eta must be > 0.0"),
    ("win_rate", "soft", "--win-rate must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        SPPO.Config(**{field: value})
