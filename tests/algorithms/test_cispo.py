"""CISPO's invariants (MiniMax 2025, arXiv:2506.13585, section 3.1)."""

import functools
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import compiled, off_policy, on_policy, random_batch

CISPO = get_algorithm("cispo")
GRPO = get_algorithm("grpo")
REINFORCE = get_algorithm("reinforce")
K, B, T = 4, 8, 10

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


def near_policy(seed, scale):
    """A batch whose current log-probs differ from the behaviour ones by N(0, scale)."""
    return off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=7)


def token_mean_weights(mask):
    return mask / mask.sum()


@given(
    st.integers(0, 2**16),
    st.sampled_from([0.3, 1.5]),
    st.sampled_from([None, 0.2, 0.5]),
    st.sampled_from([0.28, 1.0, 4.0]),
)
def test_gradient_is_truncated_is_weight_times_reinforce(seed, scale, eps_low, eps_high):
    """∂L/∂log π_θ(y_t) = −clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t / N_tok on every trained token
    (numpy re-derivation): clipping rescales a token's gradient but never zeroes it."""
    rollout, stats = near_policy(seed, scale)
    cfg = CISPO.Config(eps_low_is=eps_low, eps_high_is=eps_high)
    adv, _ = CISPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("cispo", cfg)(stats, rollout, adv)
    mask = np.asarray(rollout.loss_mask)
    rho = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs))
    low = 0.0 if eps_low is None else 1 - eps_low
    expected = np.where(mask, -np.clip(rho, low, 1 + eps_high) * np.asarray(adv) * token_mean_weights(mask), 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-4, atol=1e-8)
    live = mask & (np.asarray(adv) != 0)
    assert np.all(np.asarray(grads.logprobs)[live] != 0)


@given(st.integers(0, 2**16), st.sampled_from([0.3, 1.5]))
def test_unbounded_weights_give_the_unclipped_surrogate_gradient(seed, scale):
    """With no clipping, sg(ρ) Â ∇log π = ∇(ρ Â): CISPO's gradient is the unclipped PPO
    surrogate's (GRPO with infinite ε, token-mean, β = 0), though the losses differ."""
    rollout, stats = near_policy(seed, scale)
    cfg = CISPO.Config(eps_high_is=1e9)
    adv, _ = CISPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("cispo", cfg)(stats, rollout, adv)
    grpo_cfg = GRPO.Config(kl_coef=0.0, clip_eps_low=1e9, aggregation="token-mean")
    _, _, ref_grads = jitted("grpo", grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)


@given(st.integers(0, 2**16))
def test_on_policy_reduces_to_reinforce(seed):
    """On-policy (ρ = 1 inside the bounds) CISPO's loss and gradient are REINFORCE's,
    −Σ_t Â_t log π_θ(y_t) / N_tok, with the same advantages."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = CISPO.Config()
    adv, _ = CISPO.advantages(rollout, cfg, ())
    loss, metrics, grads = jitted("cispo", cfg)(stats, rollout, adv)
    ref_loss, _, ref_grads = jitted("reinforce", REINFORCE.Config(aggregation="token-mean"))(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-6, atol=1e-9)
    assert metrics["clip_frac"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"eps_high_is": -1.0}, "cispo: --eps-high-is must be >= 0.0; got -1.0"),
    ({"eps_low_is": -0.5}, "cispo: --eps-low-is must be >= 0.0"),
    ({"std_ddof": -1}, "cispo: --std-ddof must be >= 0"),
    ({"eps_high_is": float("inf")}, "cispo: --eps-high-is must be finite"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CISPO.Config(**overrides)
