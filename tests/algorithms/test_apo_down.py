"""APO-down invariants (D'Oosterlinck et al. 2024, arXiv:2408.06266, eq. 8)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm
from rlzoo.testing import chosen_rejected_rows, loss_and_grad, random_batch

APO = get_algorithm("apo_down")
B, T = 8, 10
seeds = st.integers(0, 2**16)


@given(seeds, st.floats(0.05, 2.0))
def test_closed_form_and_bounds(seed, beta):
    rollout, stats = random_batch(seed, B, T, 2)
    loss, _, grads = loss_and_grad(APO, APO.Config(beta=beta), stats, rollout)
    mask = np.asarray(rollout.loss_mask)
    h = beta * np.where(mask, np.asarray(stats.logprobs) - np.asarray(rollout.ref_logprobs), 0).sum(1)
    c, l = chosen_rejected_rows(rollout)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(loss, (sig(h[c]) + 1 - sig(h[c] - h[l])).mean(), rtol=1e-5)
    assert 0.0 <= float(loss) <= 2.0
    g = np.asarray(grads.logprobs)
    assert np.all(g[l][mask[l]] >= 0)  # the rejected response always goes down


@given(seeds, st.floats(0.05, 2.0))
def test_at_the_reference_only_the_rejected_moves(seed, beta):
    """At π = π_ref the chosen's two terms cancel (σ'(0) − σ'(0)) and the rejected
    gets +β/4/N_pairs: the margin grows by lowering the rejected likelihood."""
    rollout, stats = random_batch(seed, B, T, 2)
    stats = stats.replace(logprobs=rollout.ref_logprobs)
    loss, _, grads = loss_and_grad(APO, APO.Config(beta=beta), stats, rollout)
    np.testing.assert_allclose(loss, 1.0, rtol=1e-6)
    mask = np.asarray(rollout.loss_mask)
    c, l = chosen_rejected_rows(rollout)
    g = np.asarray(grads.logprobs)
    assert np.max(np.abs(g[c])) < 1e-7
    np.testing.assert_allclose(g[l][mask[l]], beta / 4 / (B // 2), rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "--beta must be > 0.0"),
    ("pair_mode", "random", "--pair-mode must be one of"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        APO.Config(**{field: value})
