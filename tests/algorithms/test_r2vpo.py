"""R²VPO's invariants (Luo et al. 2026, arXiv:2601.03320; formulas [inferred])."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, on_policy, random_batch, reinforce_gradient

R2 = get_algorithm("r2vpo")
K, B, T = 4, 8, 10


def numpy_variance(rollout, stats, center="batch"):
    w = np.asarray(rollout.loss_mask, np.float64) * np.asarray(rollout.sample_weight, np.float64)[:, None]
    w = w / w.sum()
    rho = np.exp(np.asarray(stats.logprobs, np.float64) - np.asarray(rollout.behaviour_logprobs, np.float64))
    mean = np.sum(w * rho)
    c = mean if center == "batch" else 1.0
    return np.sum(w * (rho - c) ** 2), rho, w, mean


@given(st.integers(0, 2**16))
def test_zero_multiplier_is_the_unclipped_is_policy_gradient(seed):
    rollout, stats = random_batch(seed, B, T, K)
    cfg = R2.Config()
    adv, _ = R2.advantages(rollout, cfg, ())
    _, _, grads = loss_and_grad(R2, cfg, stats, rollout, state=jnp.float32(0.0))
    _, rho, _, _ = numpy_variance(rollout, stats)
    want = np.asarray(reinforce_gradient(rollout, np.asarray(adv) * rho, "token-mean"))
    np.testing.assert_allclose(grads.logprobs, want, rtol=2e-4, atol=1e-8)


@given(st.integers(0, 2**16), st.floats(0.0, 10.0))
def test_on_policy_is_grpo_whatever_the_multiplier(seed, lam):
    """ρ ≡ 1: Var = 0 with zero gradient, so loss + λδ and the gradient are GRPO's (β = 0, token-mean)."""
    rollout, stats = random_batch(seed, B, T, K)
    rollout = on_policy(rollout, stats)
    cfg = R2.Config()
    loss, metrics, grads = loss_and_grad(R2, cfg, stats, rollout, state=jnp.float32(lam))
    grpo = get_algorithm("grpo")
    base_loss, _, base = loss_and_grad(grpo, grpo.Config(kl_coef=0.0, aggregation="token-mean"), stats, rollout)
    np.testing.assert_allclose(loss + lam * cfg.delta, base_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads.logprobs, base.logprobs, rtol=1e-5, atol=1e-7)
    assert abs(metrics["ratio_var"]) < 1e-10


@given(st.integers(0, 2**16), st.floats(0.0, 5.0), st.sampled_from(["batch", "one"]))
def test_variance_and_its_gradient(seed, lam, center):
    """Var = Σ w (ρ − c)²; the penalty adds λ · 2 w ρ (ρ − c) to ∂L/∂log π."""
    rollout, stats = random_batch(seed, B, T, K)
    cfg = R2.Config(center=center)
    _, metrics, grads = loss_and_grad(R2, cfg, stats, rollout, state=jnp.float32(lam))
    _, _, plain = loss_and_grad(R2, cfg, stats, rollout, state=jnp.float32(0.0))
    var, rho, w, mean = numpy_variance(rollout, stats, center)
    np.testing.assert_allclose(metrics["ratio_var"], var, rtol=1e-4, atol=1e-8)
    c = mean if center == "batch" else 1.0
    want = lam * 2 * w * rho * (rho - c)
    np.testing.assert_allclose(np.asarray(grads.logprobs) - np.asarray(plain.logprobs), want, rtol=1e-3, atol=1e-7)


@given(st.floats(0.0, 10.0), st.floats(0.0, 1.0), st.floats(0.0, 0.5), st.floats(0.01, 5.0))
def test_dual_step_raises_lambda_iff_variance_exceeds_budget(lam, var, delta, lr):
    cfg = R2.Config(delta=delta, dual_lr=lr)
    new = float(R2.post_update(jnp.float32(lam), {"ratio_var": jnp.float32(var)}, cfg))
    assert new >= 0
    if var > delta:
        assert new > lam
    elif var < delta:
        assert new <= lam
    np.testing.assert_allclose(new, max(0.0, lam + lr * (var - delta)), rtol=1e-5, atol=1e-6)


def test_centering_at_one_accumulates_exactly_over_microbatches():
    """The documented exemption: with center "one" the penalty is a plain
    whole-minibatch sum and microbatches add up; with center "batch" they do not."""
    rollout, stats = random_batch(3, 16, T, K)
    rollout = rollout.replace(behaviour_logprobs=rollout.behaviour_logprobs * 1.5)

    def summed(center):
        cfg = R2.Config(center=center)
        adv, state = R2.advantages(rollout, cfg, R2.init_state(cfg))
        full, full_metrics, _ = loss_and_grad(R2, cfg, stats, rollout, state=state, adv=adv)
        total, var = 0.0, 0.0
        for i, micro in enumerate(rollout.microbatches(2)):
            sl = slice(i * 8, (i + 1) * 8)
            part, metrics, _ = loss_and_grad(R2, cfg, jax.tree.map(lambda x: x[sl], stats), micro, state=state, adv=adv[sl])
            total += float(part) + float(state) * cfg.delta  # the constant −λδ is paid once per call
            var += float(metrics["ratio_var"])
        return float(full) + float(state) * cfg.delta, total, float(full_metrics["ratio_var"]), var

    full, total, full_var, var = summed("one")
    np.testing.assert_allclose(total, full, rtol=1e-5)
    # The dual step reads ratio_var, which the trainer sums over microbatches.
    assert R2.reduction("ratio_var") == "sum"
    np.testing.assert_allclose(var, full_var, rtol=1e-5)
    full, total, _, _ = summed("batch")
    assert abs(total - full) > 1e-4


@pytest.mark.parametrize("field, value, message", [
    ("delta", -0.1, "--delta must be >= 0.0"),
    ("lambda_init", -1.0, "--lambda-init must be >= 0.0"),
    ("center", "zero", "--center must be one of batch, one"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        R2.Config(**{field: value})
