"""P3O's invariants (Wu et al. 2023, arXiv:2310.00212)."""

import functools
import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, first_trained_token, on_policy, random_batch

P3O = get_algorithm("p3o")
RLOO = get_algorithm("rloo")
B, T = 8, 10
jitted = functools.lru_cache(maxsize=None)(compiled)
seeds = st.integers(0, 2**16)
modes = st.sampled_from(["separate", "joint"])
kl_coefs = st.sampled_from([0.0, 0.05])


@given(seeds, modes, st.lists(st.floats(-100, 100), min_size=B // 2, max_size=B // 2))
def test_equivalent_rewards_give_the_same_update(seed, mode, shifts):
    """r and r + c(x) carry the same preference information: same loss and gradient."""
    rollout, stats = random_batch(seed, B, T, 2)
    moved = rollout.replace(rewards=rollout.rewards + jnp.repeat(jnp.asarray(shifts, jnp.float32), 2))
    cfg = P3O.Config(clip_mode=mode)
    loss, _, grads = jitted(P3O, cfg)(stats, rollout)
    loss2, _, grads2 = jitted(P3O, cfg)(stats, moved)
    np.testing.assert_allclose(loss2, loss, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grads2.logprobs, grads.logprobs, rtol=1e-3, atol=1e-4)


@given(seeds, modes, kl_coefs, st.sampled_from([2, 4]))
def test_on_policy_gradient_is_rloo(seed, mode, kl_coef, k):
    """ρ = 1: the pairwise policy gradient ½ Δr' ∇Δlog π averaged over pairs is
    RLOO's gradient (same KL penalty); for K > 2 (all pairs of the group) too."""
    rollout, stats = random_batch(seed, B, T, k)
    rollout = on_policy(rollout, stats)
    _, metrics, grads = jitted(P3O, P3O.Config(clip_mode=mode, kl_coef=kl_coef))(stats, rollout)
    _, _, parent = jitted(RLOO, RLOO.Config(kl_coef=kl_coef))(stats, rollout)
    np.testing.assert_allclose(grads.logprobs, parent.logprobs, rtol=1e-4, atol=1e-7)
    assert metrics["clip_frac"] == 0


def _naive(rollout, stats, mode, eps):
    """Explicit loops over pairs, with sequence ratios and A = (r₁ − r₂)/2 (no KL)."""
    mask = np.asarray(rollout.loss_mask)
    s = np.where(mask, np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs), 0.0).sum(1)
    r = np.asarray(rollout.rewards, np.float64)

    def clipped(rho, adv):
        return -min(rho * adv, np.clip(rho, 1 - eps, 1 + eps) * adv)

    terms = []
    for i, j in itertools.combinations(range(len(r)), 2):
        if i // 2 != j // 2:
            continue
        adv = (r[i] - r[j]) / 2
        if mode == "separate":
            terms.append(clipped(np.exp(s[i]), adv) + clipped(np.exp(s[j]), -adv))
        else:
            terms.append(0.5 * (clipped(np.exp(s[i] - s[j]), adv) + clipped(np.exp(s[j] - s[i]), -adv)))
    return np.mean(terms)


@given(seeds, modes, st.sampled_from([0.1, 0.2]))
def test_matches_naive_pair_loop(seed, mode, eps):
    rollout, stats = random_batch(seed, B, T, 2)
    stats = stats.replace(logprobs=rollout.behaviour_logprobs + 0.1 * (stats.logprobs - rollout.behaviour_logprobs))
    loss, _, _ = jitted(P3O, P3O.Config(clip_mode=mode, clip_eps_low=eps, kl_coef=0.0))(stats, rollout)
    np.testing.assert_allclose(loss, _naive(rollout, stats, mode, eps), rtol=1e-4, atol=1e-6)


@given(seeds, modes)
def test_clipping_stops_the_gradient_past_the_trust_region(seed, mode):
    """When the preferred response's sequence ratio (or the pair's relative
    ratio) is already above 1 + ε, the pair contributes no gradient."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    rewards = np.asarray(rollout.rewards)
    preferred = rewards > rewards.reshape(-1, 2)[:, ::-1].reshape(-1)
    shift = np.where(preferred, 1.0, -1.0)  # log ratio +1 for the winner, −1 for the loser
    logp = np.asarray(rollout.behaviour_logprobs) + np.where(first, shift[:, None], 0.0)
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    _, metrics, grads = jitted(P3O, P3O.Config(clip_mode=mode, kl_coef=0.0))(stats, rollout)
    assert np.all(np.asarray(grads.logprobs) == 0)
    assert metrics["clip_frac"] == 1


@pytest.mark.parametrize("field, value, message", [
    ("clip_eps_low", -1.0, "--clip-eps-low must be >= 0.0"),
    ("clip_eps_high", -0.1, "--clip-eps-high must be >= 0.0"),
    ("kl_coef", -0.1, "--kl-coef must be >= 0.0"),
    ("kl_estimator", "k4", "--kl-estimator must be one of"),
    ("clip_mode", "both", "--clip-mode must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        P3O.Config(**{field: value})


@given(seeds)
def test_upper_clip_bound_is_set_apart_from_the_lower(seed):
    """Separate clipping with the winner's log ratio at +1 (ρ = e) and the
    loser's at −1 (ρ = 1/e): with ε_high = 2 (1 + ε_high > e) the winner is
    no longer clipped and gets a gradient, the loser (ρ < 1 − ε_low) still none."""
    rollout, stats = random_batch(seed, B, T, 2)
    mask = np.asarray(rollout.loss_mask)
    first = first_trained_token(rollout)
    rewards = np.asarray(rollout.rewards)
    preferred = rewards > rewards.reshape(-1, 2)[:, ::-1].reshape(-1)
    logp = np.asarray(rollout.behaviour_logprobs) + np.where(first, np.where(preferred, 1.0, -1.0)[:, None], 0.0)
    stats = stats.replace(logprobs=jnp.asarray(np.where(mask, logp, stats.logprobs), jnp.float32))
    cfg = P3O.Config(clip_eps_high=2.0, kl_coef=0.0)
    assert cfg.clip_bounds == (0.2, 2.0) and P3O.Config().clip_bounds == (0.2, 0.2)
    _, _, grads = jitted(P3O, cfg)(stats, rollout)
    g = np.asarray(grads.logprobs)
    winners = preferred & mask.any(1)
    assert np.all(g[winners][mask[winners]] < 0)
    assert np.all(g[~preferred] == 0)


def test_kl_penalty_needs_the_reference_only_when_on():
    assert P3O.required(P3O.Config()) == {"ref_logprobs"}
    assert P3O.required(P3O.Config(kl_coef=0.0)) == frozenset()
