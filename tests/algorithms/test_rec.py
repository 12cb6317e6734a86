"""REC's invariants (Yao et al. 2025, arXiv:2509.24203; Trinity-RFT rec loss)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

REC = get_algorithm("rec")
K, B, T = 4, 8, 10
MODES = ["none", "one-side", "two-side", "ring"]


def numpy_region(ratio, adv, mode, el=0.2, eh=0.2, elp=0.6, ehp=2.0):
    inner = (ratio >= 1 - el) & (ratio <= 1 + eh)
    if mode == "none":
        return np.ones_like(inner)
    if mode == "one-side":
        return ((adv >= 0) & (ratio <= 1 + eh)) | ((adv <= 0) & (ratio >= 1 - el))
    if mode == "two-side":
        return inner
    return inner | ((adv >= 0) & (ratio <= 1 - elp)) | ((adv <= 0) & (ratio >= 1 + ehp))


@given(st.integers(0, 2**16))
def test_no_clip_no_weight_is_group_mean_reinforce(seed):
    """REC with clip "none" and weight "none" is REINFORCE with the group-mean
    baseline, token-mean: same loss and gradient."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = REC.Config(clip_mode="none", weight="none")
    loss, _, grads = loss_and_grad(REC, cfg, stats, rollout)
    reinforce = get_algorithm("reinforce")
    base_loss, _, base = loss_and_grad(reinforce, reinforce.Config(aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss, base_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-8)


@given(st.integers(0, 2**16))
def test_one_side_with_is_has_grpos_gradient(seed):
    """sg(ρ)∇log π = ∇ρ, so REC-OneSide-IS with std-scaled advantages has GRPO's
    (kl_coef = 0, token-mean, same std) gradient off-policy."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = REC.Config(clip_mode="one-side", weight="importance_sampling", scale_rewards=True)
    _, _, grads = loss_and_grad(REC, cfg, stats, rollout)
    grpo = get_algorithm("grpo")
    gcfg = grpo.Config(kl_coef=0.0, aggregation="token-mean", std_ddof=0, std_eps=cfg.std_eps)
    _, _, base = loss_and_grad(grpo, gcfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-4, atol=1e-8)


@given(st.integers(0, 2**16), st.sampled_from(MODES), st.sampled_from(["none", "importance_sampling"]),
       st.sampled_from([(0.2, None), (0.1, 0.5)]))
def test_gradient_is_masked_weighted_reinforce(seed, mode, weight, bounds):
    """∇ℓ = −w·Â·(1 or ρ)·M with the region M re-derived in numpy (clip_eps_high
    None: the symmetric default)."""
    rollout, stats = random_batch(seed, B, T, K)
    # Widen the spread of ratios so every region boundary is crossed.
    rollout = rollout.replace(behaviour_logprobs=rollout.behaviour_logprobs * 1.3)
    el, eh = bounds
    cfg = REC.Config(clip_mode=mode, weight=weight, clip_eps_low=el, clip_eps_high=eh)
    eh = el if eh is None else eh
    adv, _ = REC.advantages(rollout, cfg, ())
    _, metrics, grads = loss_and_grad(REC, cfg, stats, rollout)
    ratio = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))
    region = numpy_region(ratio, np.asarray(adv), mode, el, eh)
    scale = ratio if weight == "importance_sampling" else 1.0
    want = np.asarray(reinforce_gradient(rollout, adv, "token-mean")) * scale * region
    trained = np.asarray(rollout.loss_mask)
    # Tokens within float32 rounding of a region boundary are not compared.
    edges = np.array([1 - el, 1 + eh, 0.4, 3.0])
    clear = ~trained | (np.min(np.abs(ratio[..., None] - edges), axis=-1) > 1e-5)
    np.testing.assert_allclose(np.asarray(grads.logprobs)[clear], want[clear], rtol=2e-4, atol=1e-7)
    if clear.all():
        np.testing.assert_allclose(metrics["clip_frac"], 1 - region[trained].mean(), atol=1e-6)


@given(st.integers(0, 2**16), st.sampled_from(MODES))
def test_on_policy_every_mode_is_reinforce(seed, mode):
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = REC.Config(clip_mode=mode, weight="importance_sampling")
    adv, _ = REC.advantages(rollout, cfg, ())
    _, metrics, grads = loss_and_grad(REC, cfg, stats, rollout)
    np.testing.assert_allclose(grads.logprobs, reinforce_gradient(rollout, adv, "token-mean"), rtol=1e-5, atol=1e-8)
    assert metrics["clip_frac"] == 0


def test_red_weight_scales_by_exp_advantage():
    rollout, stats = random_batch(2, B, T, K)
    cfg = REC.Config(clip_mode="none", weight="advantage", temp=2.0)
    adv, _ = REC.advantages(rollout, cfg, ())
    _, _, grads = loss_and_grad(REC, cfg, stats, rollout)
    a = np.asarray(adv)
    want = np.asarray(reinforce_gradient(rollout, adv, "token-mean")) * np.exp(a / 2.0)
    np.testing.assert_allclose(grads.logprobs, want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("field, value, message", [
    ("clip_eps_low", -0.2, "--clip-eps-low must be >= 0.0"),
    ("temp", 0.0, "--temp must be > 0.0"),
    ("clip_mode", "three-side", "--clip-mode must be one of none, one-side, two-side, ring"),
    ("weight", "is", "--weight must be one of none, importance_sampling, advantage"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        REC.Config(**{field: value})
