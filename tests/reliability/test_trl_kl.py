"""`kl_importance_weighted` (issue #11, item 7): the KL term multiplied by the
token ratio ρ_t = π_θ/π_old, TRL GRPOTrainer's default (`use_bias_correction_kl`).
TRL itself is compared in tests/parity/test_trl_grpo.py; these tests need no torch.

With δ_t = log π_ref − log π_θ and k3_t = e^δ − 1 − δ, the per-token gradients
with respect to log π_θ(y_t) are

    unweighted   ∂k3/∂log π        = 1 − e^δ
    weighted     ∂(ρ·k3)/∂log π    = ρ·(k3 + 1 − e^δ) = ρ·(log π_θ − log π_ref)

the second being the importance-weighted score-function gradient of
KL(π_θ ‖ π_ref) from samples of π_old (DeepSeek-V3.2, arXiv:2512.02556).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, list_algorithms, ops
from rlzoo.testing import compiled, loss_and_grad, off_policy

B, T, K = 4, 6, 2
BETA = 0.04


def kl_only(name, weighted, seed, scale):
    """Loss and log-prob gradient of `name` with zero advantages, so only β·KL remains."""
    algo = get_algorithm(name)
    cfg = algo.Config(kl_coef=BETA, kl_estimator="k3", kl_importance_weighted=weighted)
    rollout, stats = off_policy(seed, scale, B, T, K)
    loss, _, grads = loss_and_grad(algo, cfg, stats, rollout, adv=jnp.zeros((B, T)))
    return rollout, stats, cfg, loss, np.asarray(grads.logprobs)


@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.3]), st.booleans())
def test_weighted_kl_value_and_gradient_match_the_closed_forms(seed, scale, weighted):
    rollout, stats, cfg, loss, grad = kl_only("grpo", weighted, seed, scale)
    logp, old, ref = (np.asarray(x, np.float64) for x in (stats.logprobs, rollout.behaviour_logprobs, rollout.ref_logprobs))
    w = np.asarray(ops.token_weights(rollout, cfg.aggregation), np.float64)
    delta = ref - logp
    k3 = np.expm1(delta) - delta
    rho = np.exp(logp - old) if weighted else np.ones_like(logp)
    np.testing.assert_allclose(loss, BETA * np.sum(w * rho * k3), rtol=1e-4, atol=1e-8)
    want = BETA * w * (rho * (logp - ref) if weighted else 1.0 - np.exp(delta))
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-8)


def test_weighting_changes_the_gradient_even_on_policy():
    """At ρ = 1 the loss is the same, the gradient is not (the ratio is differentiable)."""
    on = kl_only("grpo", True, 0, 0.0)
    off = kl_only("grpo", False, 0, 0.0)
    np.testing.assert_allclose(on[3], off[3], rtol=1e-6)
    assert np.abs(on[4] - off[4]).max() > 1e-4


WEIGHTABLE = [a for a in list_algorithms() if "kl_importance_weighted" in a.Config.__dataclass_fields__]
REWARD_KL = ["ppo", "rloo", "rebel", "p3o"]


@pytest.mark.parametrize("algo", WEIGHTABLE, ids=[a.name for a in WEIGHTABLE])
def test_every_algorithm_with_the_option_defaults_off_and_honours_it(algo):
    """Off by default (the papers' objectives). Where the KL is in the loss,
    turning it on must change the gradient on-policy: every policy loss
    threads it through to `regularised_policy_loss`."""
    assert algo.Config().kl_importance_weighted is False
    if algo.name in REWARD_KL:
        pytest.skip(f"{algo.name} puts the KL in the reward (test_reward_kl_algorithms_reject_the_option)")
    cfg_on = algo.Config(kl_coef=BETA, kl_importance_weighted=True)
    cfg_off = algo.Config(kl_coef=BETA, kl_importance_weighted=False)
    rollout, stats = off_policy(1, 0.0, 8, T, 2 if algo.pairwise else 4)
    adv, _ = algo.advantages(rollout, cfg_off, algo.init_state(cfg_off))
    _, _, g_on = compiled(algo, cfg_on)(stats, rollout, adv)
    _, _, g_off = compiled(algo, cfg_off)(stats, rollout, adv)
    assert np.abs(np.asarray(g_on.logprobs) - np.asarray(g_off.logprobs)).max() > 1e-6, algo.name


@pytest.mark.parametrize("name", REWARD_KL)
def test_reward_kl_algorithms_reject_the_option(name):
    """Their KL is a reward penalty at the behaviour policy, outside the gradient,
    so the option would silently do nothing."""
    with pytest.raises(ValueError, match=rf"^{name}: --kl-importance-weighted has nothing to weight"):
        get_algorithm(name).Config(kl_importance_weighted=True)
