"""GMPO's invariants (Zhao et al. 2025, arXiv:2507.20673)."""

import functools
import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.testing import compiled, off_policy, on_policy, random_batch, reinforce_gradient

GMPO = get_algorithm("gmpo")
GRPO = get_algorithm("grpo")
K, B, T = 4, 8, 10

# One compilation per (algorithm, config) across hypothesis examples.
jitted = functools.lru_cache(maxsize=None)(compiled)


def near_policy(seed, scale):
    """A batch whose current log-probs differ from the behaviour ones by N(0, scale)."""
    return off_policy(seed, scale, batch=B, length=T, group_size=K, noise_seed_offset=3)


def naive_loss(rollout, stats, adv, eps_low, eps_high):
    """−1/B Σ_i Â_i (Π_t ρ̃_{i,t})^(1/|o_i|), ρ̃ clipped pessimistically per token, by loops."""
    mask = np.asarray(rollout.loss_mask)
    logp = np.asarray(stats.logprobs, np.float64)
    old = np.asarray(rollout.behaviour_logprobs, np.float64)
    total = 0.0
    for i in range(B):
        a = np.asarray(adv)[i][mask[i]].mean()
        product = 1.0
        for t in np.flatnonzero(mask[i]):
            rho = np.exp(logp[i, t] - old[i, t])
            bounded = np.clip(rho, np.exp(-eps_low), np.exp(eps_high))
            product *= min(rho, bounded) if a > 0 else max(rho, bounded)
        total += -a * product ** (1.0 / mask[i].sum())
    return total / B


@given(st.integers(0, 2**16), st.sampled_from([0.1, 0.6]), st.sampled_from([(0.4, 0.4), (0.2, 0.3)]))
def test_loss_is_the_geometric_mean_of_clipped_ratios(seed, scale, eps):
    rollout, stats = near_policy(seed, scale)
    cfg = GMPO.Config(clip_eps_low=eps[0], clip_eps_high=eps[1])
    adv, _ = GMPO.advantages(rollout, cfg, ())
    loss, _, _ = jitted("gmpo", cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, naive_loss(rollout, stats, adv, *eps), rtol=1e-4, atol=1e-6)


@given(st.integers(0, 2**16), st.sampled_from([0.8, 1.2]))
def test_only_clipped_tokens_lose_their_gradient(seed, scale):
    """Unlike GSPO's whole-response clip, a response keeps gradient on its in-range tokens:
    token t of row i gets −Â_i s̃_i / (|o_i| B) unless its own log-ratio is clipped."""
    rollout, stats = near_policy(seed, scale)
    cfg = GMPO.Config()
    adv, _ = GMPO.advantages(rollout, cfg, ())
    _, _, grads = jitted("gmpo", cfg)(stats, rollout, adv)
    mask = np.asarray(rollout.loss_mask)
    lr = (np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs)) * mask
    a = np.asarray(ops.sequence_mean(adv, rollout.loss_mask), np.float64)
    bounded = np.clip(lr, -0.4, 0.4)
    pessimistic = np.where(a[:, None] > 0, np.minimum(lr, bounded), np.maximum(lr, bounded))
    clipped = pessimistic != lr
    lengths = mask.sum(1)
    s = np.exp((pessimistic * mask).sum(1) / lengths)
    expected = np.where(mask & ~clipped, (-a * s / (lengths * B))[:, None], 0.0)
    np.testing.assert_allclose(grads.logprobs, expected, rtol=1e-4, atol=1e-8)
    assert np.any(clipped & mask) and np.any(~clipped & mask)


@given(st.integers(0, 2**16))
def test_on_policy_gradient_is_sequence_mean_reinforce(seed):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = GMPO.Config()
    adv, _ = GMPO.advantages(rollout, cfg, ())
    _, metrics, grads = jitted("gmpo", cfg)(stats, rollout, adv)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "seq-mean-token-mean"), rtol=1e-5, atol=1e-7)
    assert metrics["clip_frac"] == 0


@given(st.integers(0, 2**16), st.sampled_from([(0.4, 0.4), (0.1, 0.3)]))
def test_one_token_responses_reduce_to_grpo(seed, eps):
    """For one-token responses GMPO(ε) = GRPO(kl_coef = 0) with ratio bounds [e^−ε_low, e^ε_high]."""
    rollout, stats = near_policy(seed, 0.5)
    one = np.zeros((B, T), bool)
    one[np.arange(B), 1 + np.arange(B) % (T - 1)] = True
    rollout = rollout.replace(loss_mask=jnp.asarray(one))
    cfg = GMPO.Config(clip_eps_low=eps[0], clip_eps_high=eps[1], std_eps=1e-6)
    adv, _ = GMPO.advantages(rollout, cfg, ())
    loss, _, grads = jitted("gmpo", cfg)(stats, rollout, adv)
    grpo_cfg = GRPO.Config(kl_coef=0.0, clip_eps_low=1 - np.exp(-eps[0]), clip_eps_high=np.exp(eps[1]) - 1)
    ref_loss, _, ref_grads = jitted("grpo", grpo_cfg)(stats, rollout, adv)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, ref_grads.logprobs, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("overrides, message", [
    ({"clip_eps_low": -0.4}, 'gmpo: --clip-eps-low must be >= 0.0; got -0.4'),
    ({"std_eps": 0.0}, 'gmpo: --std-eps must be > 0.0'),
    ({"std_ddof": -1}, 'gmpo: --std-ddof must be >= 0'),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GMPO.Config(**overrides)
