"""What the Python API does with bad loss inputs (issue #11, item 6 a–c):
PolicyStats shaped unlike the rollout, non-finite log-probs on trained
tokens, and NaN / ±∞ padding on untrained positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from rlzoo import get_algorithm, ops
from rlzoo.rollout import make_rollout, validate, validate_stats, zero_untrained
from rlzoo.testing import compiled, random_batch

B, T, K = 4, 6, 2
PER_TOKEN_FLOATS = ("behaviour_logprobs", "ref_logprobs", "inference_logprobs", "old_values", "sample_entropy")


def batch(seed=0):
    return random_batch(seed, B, T, K)


def rollout_arrays(rollout):
    """The rollout's fields as numpy arrays, for rebuilding it with make_rollout."""
    names = ("ref_logprobs", "inference_logprobs", "old_values", "sample_entropy", "old_topk_logprobs")
    return {name: np.array(getattr(rollout, name)) for name in names}


# --------------------------------------------------------------------------
# a. PolicyStats against the rollout
# --------------------------------------------------------------------------

@pytest.mark.parametrize("field, shape, message", [
    ("logprobs", (B, 1), r"PolicyStats\.logprobs must have shape \[B, T\] = \[4, 6\], got \(4, 1\) \(axis 1: T should be 6\)"),
    ("logprobs", (B,), r"PolicyStats\.logprobs must have shape \[B, T\] = \[4, 6\], got rank 1 shape \(4,\)"),
    ("entropy", (1, T), r"PolicyStats\.entropy must have shape \[B, T\] = \[4, 6\], got \(1, 6\) \(axis 0: B should be 4\)"),
    ("values", (B, T, 1), r"PolicyStats\.values must have shape \[B, T\] = \[4, 6\], got rank 3 shape \(4, 6, 1\)"),
    ("topk_logprobs", (B, T + 1, 4), r"PolicyStats\.topk_logprobs must have shape \[B, T, k\] = \[4, 6, k\], got \(4, 7, 4\) \(axis 1: T should be 6\)"),
    ("topk_logprobs", (B, T), r"PolicyStats\.topk_logprobs must have shape \[B, T, k\] = \[4, 6, k\], got rank 2"),
])
def test_validate_stats_names_the_field_and_both_shapes(field, shape, message):
    rollout, stats = batch()
    bad = stats.replace(**{field: jnp.zeros(shape, jnp.float32)})
    with pytest.raises(ValueError, match=message) as info:
        validate_stats(bad, rollout)
    assert "\n" not in str(info.value)
    assert validate_stats(stats, rollout) is stats


def test_validate_stats_rejects_integer_logprobs_and_non_stats():
    rollout, stats = batch()
    with pytest.raises(ValueError, match=r"PolicyStats\.logprobs must have a float dtype, got int32"):
        validate_stats(stats.replace(logprobs=jnp.zeros((B, T), jnp.int32)), rollout)
    with pytest.raises(TypeError, match="expected PolicyStats"):
        validate_stats(stats.logprobs, rollout)


@pytest.mark.parametrize("name, field", [("grpo", "logprobs"), ("ppo", "values")])
def test_misshapen_stats_are_an_error_naming_the_field(name, field):
    """PPO's [B, 1] values broadcast against the [B, T] returns into a finite,
    wrong value loss; a [B, 1] log-prob failed an anonymous shape assertion.
    Both must be a ValueError naming the field, eagerly and under jit."""
    rollout, stats = batch()
    algo = get_algorithm(name)
    cfg = algo.Config()
    adv, state = algo.advantages(rollout, cfg, algo.init_state(cfg))
    squeezed = stats.replace(**{field: getattr(stats, field)[:, :1]})
    message = rf"PolicyStats\.{field} must have shape \[B, T\] = \[4, 6\], got \(4, 1\)"
    with pytest.raises(ValueError, match=message):
        algo.loss(squeezed, rollout, adv, cfg, state)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda s: algo.loss(s, rollout, adv, cfg, state))(squeezed)


# --------------------------------------------------------------------------
# b. Non-finite per-token values on trained tokens
# --------------------------------------------------------------------------

@pytest.mark.parametrize("field", PER_TOKEN_FLOATS)
@pytest.mark.parametrize("bad", [np.nan, -np.inf, np.inf])
def test_non_finite_values_on_trained_tokens_are_rejected_by_name(field, bad):
    rollout, _ = batch()
    arrays = rollout_arrays(rollout) | {"behaviour_logprobs": np.array(rollout.behaviour_logprobs)}
    mask = np.asarray(rollout.loss_mask)
    b, t = np.argwhere(mask)[3]
    arrays[field][b, t] = bad
    with pytest.raises(ValueError, match=rf"Rollout\.{field} has non-finite entries on trained tokens .* \[b, t\] = \[\[{b}, {t}\]\]"):
        make_rollout(rollout.tokens, mask, rollout.rewards, group_size=K, **arrays)


def test_non_finite_values_off_the_mask_are_accepted():
    """Padding may hold anything: the losses never read it (see part c)."""
    rollout, _ = batch()
    mask = np.asarray(rollout.loss_mask)
    arrays = {name: np.where(mask, value, np.nan) if value.ndim == 2 else value
              for name, value in rollout_arrays(rollout).items()}
    behaviour = np.where(mask, np.asarray(rollout.behaviour_logprobs), -np.inf)
    make_rollout(rollout.tokens, mask, rollout.rewards, behaviour, group_size=K, **arrays)


def test_top_k_lists_may_hold_minus_infinity_but_not_nan():
    """−∞ in a top-k list is a support smaller than k; NaN is a bug."""
    rollout, _ = batch()
    mask = np.asarray(rollout.loss_mask)
    b, t = np.argwhere(mask)[0]
    arrays = rollout_arrays(rollout)
    arrays["old_topk_logprobs"][b, t, -1] = -np.inf
    make_rollout(rollout.tokens, mask, rollout.rewards, group_size=K, **arrays)
    arrays["old_topk_logprobs"][b, t, -1] = np.nan
    with pytest.raises(ValueError, match=r"Rollout\.old_topk_logprobs has non-finite entries on trained tokens"):
        make_rollout(rollout.tokens, mask, rollout.rewards, group_size=K, **arrays)


def test_value_checks_are_skipped_under_jit():
    """Traced values cannot be inspected: validation inside jit checks shapes only."""
    rollout, _ = batch()
    poisoned = rollout.replace(behaviour_logprobs=jnp.full((B, T), jnp.nan))
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        validate(poisoned)
    jax.jit(validate)(poisoned)


# --------------------------------------------------------------------------
# c. NaN / ±∞ padding reaches neither the loss nor the gradient
# --------------------------------------------------------------------------

junk = st.sampled_from([np.nan, np.inf, -np.inf, 1e30])


@given(junk, st.integers(0, 2**16))
def test_zero_untrained_keeps_trained_entries_and_zeroes_the_rest(value, seed):
    rollout, stats = random_batch(seed, B, T, K)
    off = ~np.asarray(rollout.loss_mask)
    dirty = stats.replace(logprobs=jnp.where(jnp.asarray(off), value, stats.logprobs),
                          topk_logprobs=jnp.where(jnp.asarray(off)[..., None], value, stats.topk_logprobs))
    dirty_rollout = rollout.replace(ref_logprobs=jnp.where(jnp.asarray(off), value, rollout.ref_logprobs))
    clean, clean_rollout = zero_untrained(dirty, dirty_rollout)
    for got, original in ((clean.logprobs, stats.logprobs), (clean_rollout.ref_logprobs, rollout.ref_logprobs),
                          (clean.topk_logprobs, stats.topk_logprobs)):
        got, original = np.asarray(got), np.asarray(original)
        np.testing.assert_array_equal(got[~off], original[~off])
        assert np.all(got[off] == 0)
    # Integer and per-row fields are untouched.
    assert clean_rollout.tokens is dirty_rollout.tokens and clean_rollout.rewards is dirty_rollout.rewards


def _poison(x, off, value):
    return jnp.where(off.reshape(off.shape + (1,) * (x.ndim - 2)), value, x)


@pytest.mark.parametrize("name", ["grpo", "dapo", "ppo"])
def test_nan_padding_in_any_one_input_leaves_loss_and_gradient_unchanged(name):
    """The issue's cases one input at a time (the registry invariant poisons all at once)."""
    algo = get_algorithm(name)
    cfg = algo.Config()
    rollout, stats = batch(1)
    off = ~rollout.loss_mask
    adv, _ = algo.advantages(rollout, cfg, algo.init_state(cfg))
    run = compiled(algo, cfg)
    loss, _, grads = run(stats, rollout, adv)
    is_dict = isinstance(adv, dict)
    cases = {
        "behaviour_logprobs": (stats, rollout.replace(behaviour_logprobs=_poison(rollout.behaviour_logprobs, off, jnp.nan)), adv),
        "ref_logprobs": (stats, rollout.replace(ref_logprobs=_poison(rollout.ref_logprobs, off, jnp.nan)), adv),
        "advantages": (stats, rollout, jax.tree.map(lambda a: _poison(a, off, jnp.nan), adv)),
        "stats.logprobs": (stats.replace(logprobs=_poison(stats.logprobs, off, jnp.nan)), rollout, adv),
        "stats.values": (stats.replace(values=_poison(stats.values, off, jnp.nan)), rollout, adv),
        "old_values": (stats, rollout.replace(old_values=_poison(rollout.old_values, off, -jnp.inf)), adv),
    }
    assert is_dict == (name == "ppo")
    for case, (s, r, a) in cases.items():
        loss2, _, grads2 = run(s, r, a)
        np.testing.assert_allclose(loss2, loss, rtol=1e-6, atol=1e-7, err_msg=f"{name}: {case}")
        for leaf, leaf2 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
            np.testing.assert_allclose(leaf2, leaf, rtol=1e-6, atol=1e-7, err_msg=f"{name}: {case}")


@given(junk)
def test_masked_ops_have_clean_gradients_with_junk_off_the_mask(value):
    """A `where` on the output is not enough: each op cleans its input first."""
    rollout, stats = batch(2)
    mask = rollout.loss_mask
    x = jnp.where(mask, stats.values, value)
    old = jnp.where(mask, rollout.behaviour_logprobs, value)
    fns = {
        "masked_whiten": lambda v: jnp.sum(ops.masked_whiten(v, mask) ** 2),
        "effective_sample_size": lambda v: ops.effective_sample_size(v, ops.weighted_mask(rollout)),
        "sequence_log_ratio": lambda v: jnp.sum(ops.sequence_log_ratio(v, old, mask)),
    }
    for name, fn in fns.items():
        value_, grad = jax.value_and_grad(fn)(x)
        clean_value, clean_grad = jax.value_and_grad(fn)(jnp.where(mask, stats.values, 0.0))
        assert np.isfinite(value_) and np.all(np.isfinite(grad)), name
        np.testing.assert_allclose(value_, clean_value, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(grad, clean_grad, rtol=1e-5, atol=1e-7, err_msg=name)
        assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0), name


def test_loss_inputs_cleans_the_advantage_and_checks_its_shape():
    rollout, stats = batch(3)
    adv = jnp.where(rollout.loss_mask, 1.0, jnp.nan)
    _, _, clean = ops.loss_inputs(stats, rollout, adv)
    np.testing.assert_array_equal(clean, np.where(rollout.loss_mask, 1.0, 0.0))
    with pytest.raises(AssertionError):
        ops.loss_inputs(stats, rollout, adv[:, :1])
