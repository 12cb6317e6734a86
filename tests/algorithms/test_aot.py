"""AOT (paired) invariants (Melnyk et al. 2024, arXiv:2406.05882)."""

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import loss_and_grad, random_batch

AOT, DPO = get_algorithm("aot"), get_algorithm("dpo")
B, T = 8, 10
seeds = st.integers(0, 2**16)


def margins(rollout, logp):
    mask = np.asarray(rollout.loss_mask)
    total = lambda x: np.where(mask, np.asarray(x), 0).sum(1).reshape(-1, 2)  # noqa: E731
    r = np.asarray(rollout.rewards).reshape(-1, 2)
    sign = np.sign(r[:, 0] - r[:, 1])
    pol, ref = total(logp), total(rollout.ref_logprobs)
    return sign * (pol[:, 0] - pol[:, 1]), sign * (ref[:, 0] - ref[:, 1])


@given(seeds, st.floats(0.05, 2.0))
def test_single_pair_is_dpo(seed, beta):
    rollout, stats = random_batch(seed, 2, T, 2)
    loss, _, grads = loss_and_grad(AOT, AOT.Config(beta=beta), stats, rollout)
    loss2, _, grads2 = loss_and_grad(DPO, DPO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5)
    np.testing.assert_allclose(grads.logprobs, grads2.logprobs, rtol=1e-5, atol=1e-8)


@given(seeds, st.floats(0.05, 2.0), st.floats(0.0, 0.3))
def test_loss_matches_sorted_quantiles(seed, beta, eps):
    """Σ_k ℓ(β(ρ_(k) − ρ^ref_(k))) over the separately sorted margins."""
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, _ = loss_and_grad(AOT, AOT.Config(beta=beta, label_smoothing=eps), stats, rollout)
    pol, ref = margins(rollout, stats.logprobs)
    z = beta * (np.sort(pol) - np.sort(ref))
    expected = (1 - eps) * np.logaddexp(0, -z) + eps * np.logaddexp(0, z)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


@given(seeds, st.randoms(use_true_random=False))
def test_depends_on_the_batch_only_through_the_two_margin_distributions(seed, rnd):
    """Re-pairing the reference margins with other pairs (same multiset) leaves the
    loss unchanged, unlike DPO, which matches each pair with its own reference."""
    rollout, stats = random_batch(seed, B, T, 2)
    perm = np.array(rnd.sample(range(B // 2), B // 2))
    ref = np.asarray(rollout.ref_logprobs).reshape(B // 2, 2, T)[perm].reshape(B, T)
    mask = np.asarray(rollout.loss_mask).reshape(B // 2, 2, T)[perm].reshape(B, T)
    rewards = np.asarray(rollout.rewards).reshape(B // 2, 2)[perm].reshape(B)
    # move the reference of pair perm[g] onto pair g's rows: same set of reference margins
    pol, _ = margins(rollout, stats.logprobs)
    shuffled = rollout.replace(ref_logprobs=jax.numpy.asarray(ref), loss_mask=jax.numpy.asarray(mask),
                               rewards=jax.numpy.asarray(rewards))
    pol_s, ref_s = margins(shuffled, stats.logprobs)
    _, ref_o = margins(rollout, stats.logprobs)
    np.testing.assert_allclose(np.sort(ref_s), np.sort(ref_o), rtol=1e-5)
    loss, _, _ = loss_and_grad(AOT, AOT.Config(), stats, shuffled)
    z = 0.1 * (np.sort(pol_s) - np.sort(ref_s))
    np.testing.assert_allclose(loss, np.logaddexp(0, -z).mean(), rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("label_smoothing", 1.5, "--label-smoothing must be <= 1.0"),
    ("pair_mode", "random", "--pair-mode must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        AOT.Config(**{field: value})
