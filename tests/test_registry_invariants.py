"""Invariants every registered algorithm gets automatically.

For each algorithm with its paper-default Config (and a config with every
regulariser switched on where the algorithm has one):
- loss and gradient are finite on random rollouts, with extreme log-probs,
  fully masked rows and groups whose rewards are all equal;
- entries where loss_mask is False change neither loss nor gradient, and get
  zero gradient, even when they are NaN (padding that was never filled); this
  includes the observation and tool tokens between two policy turns of a
  multi-turn row;
- permuting groups, and rows within a group, permutes the gradient and
  leaves the loss unchanged;
- jit and eager agree;
- PolicyStats shaped unlike the rollout are rejected with the field named;
- splitting a minibatch into 2 and 4 microbatches and accumulating gives the
  same loss and gradient;
- on 8 simulated CPU devices, with the batch sharded, loss and gradient equal
  the single-device result.
An algorithm opts out of one only through `Algorithm.exemptions`, with a reason.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from rlzoo import list_algorithms
from rlzoo.testing import loss_and_grad, random_batch

ALGORITHMS = list_algorithms()
IDS = [a.name for a in ALGORITHMS]
BATCH, LENGTH = 16, 12


def group_size(algo) -> int:
    return 2 if algo.pairwise else 4


def check_exempt(algo, invariant: str) -> None:
    reason = algo.exemptions.get(invariant)
    if reason:
        pytest.skip(f"{algo.name} is exempt from {invariant}: {reason}")


@functools.cache
def jitted(algo):
    """One compiled loss-and-gradient per algorithm (default config), reused across tests."""
    cfg = algo.Config()
    return jax.jit(lambda stats, rollout: loss_and_grad(algo, cfg, stats, rollout))


def assert_close(a, b, rtol=2e-5, atol=2e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def batch_for(algo, seed=0, **kw):
    return random_batch(seed, BATCH, LENGTH, group_size(algo), **kw)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("case", ["random", "extreme", "masked-rows", "equal-rewards", "binary"])
def test_finite(algo, case):
    check_exempt(algo, "finite")
    kw = {
        "random": {},
        "extreme": {"extreme": True},
        "masked-rows": {"masked_rows": (0, 5)},
        "equal-rewards": {"equal_reward_groups": tuple(range(BATCH // group_size(algo)))},
        "binary": {"binary_rewards": True},
    }[case]
    rollout, stats = batch_for(algo, seed=1, **kw)
    loss, metrics, grads = jitted(algo)(stats, rollout)
    assert np.isfinite(loss), f"{algo.name}: loss {loss}"
    for name, value in metrics.items():
        assert np.all(np.isfinite(value)), f"{algo.name}: metric {name} = {value}"
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf)), f"{algo.name}: non-finite gradient"


def _perturb_off_mask(rollout, stats, seed):
    rng = np.random.default_rng(seed)
    off = ~np.asarray(rollout.loss_mask)

    def noise(x, scale=5.0):
        x = np.asarray(x)
        return jnp.asarray(np.where(off, x + rng.normal(0, scale, x.shape).astype(x.dtype), x))

    tokens = np.asarray(rollout.tokens)
    rollout = rollout.replace(
        tokens=jnp.asarray(np.where(off, rng.integers(0, 32, tokens.shape), tokens), jnp.int32),
        behaviour_logprobs=noise(rollout.behaviour_logprobs),
        ref_logprobs=noise(rollout.ref_logprobs),
        inference_logprobs=noise(rollout.inference_logprobs),
        old_values=noise(rollout.old_values),
        sample_entropy=jnp.abs(noise(rollout.sample_entropy)),
        segment_ids=jnp.asarray(np.where(off, rng.integers(0, 50, tokens.shape), rollout.segment_ids), jnp.int32),
    )
    stats = stats.replace(
        logprobs=-jnp.abs(noise(stats.logprobs)),
        entropy=jnp.abs(noise(stats.entropy)),
        values=noise(stats.values),
        topk_logprobs=jnp.asarray(np.where(off[..., None], np.asarray(stats.topk_logprobs) - 3.0, stats.topk_logprobs)),
    )
    return rollout, stats


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_mask_invariance(algo):
    check_exempt(algo, "mask")
    rollout, stats = batch_for(algo, seed=2)
    # The batch holds multi-turn rows: untrained observation / tool tokens between two policy turns.
    assert int(np.asarray(rollout.num_turns).max()) >= 2
    loss, _, grads = jitted(algo)(stats, rollout)
    loss2, _, grads2 = jitted(algo)(*_perturb_off_mask(rollout, stats, seed=3)[::-1])
    np.testing.assert_allclose(loss, loss2, rtol=1e-5, atol=1e-6)
    assert_close(grads, grads2)
    off = ~np.asarray(rollout.loss_mask)
    for name in ("logprobs", "entropy", "values"):
        assert np.all(np.asarray(getattr(grads, name))[off] == 0), f"{algo.name}: gradient of {name} off the mask"


def _nan_off_mask(rollout, stats):
    """Every float per-token field of the Rollout and the PolicyStats NaN where loss_mask is False."""
    off = ~np.asarray(rollout.loss_mask)

    def poison(x):
        if x is None or np.asarray(x).dtype.kind != "f" or np.ndim(x) < 2:
            return x
        x = np.asarray(x)
        where = off.reshape(off.shape + (1,) * (x.ndim - 2))
        return jnp.asarray(np.where(where, np.nan, x), x.dtype)

    per_token = [f for f in dataclasses.fields(rollout)
                 if f.name not in ("rewards", "sample_weight", "reward_components", "turn_rewards")]
    rollout = rollout.replace(**{f.name: poison(getattr(rollout, f.name)) for f in per_token if f.metadata.get("pytree_node", True)})
    stats = stats.replace(**{f.name: poison(getattr(stats, f.name)) for f in dataclasses.fields(stats)})
    return rollout, stats


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_nan_off_mask_reaches_neither_loss_nor_gradient(algo):
    """NaN at untrained positions: a `where` on a loss's output is not enough, since
    the backward pass multiplies the zero cotangent by a NaN local derivative
    (∂ exp(NaN) · 0 = NaN); the inputs must be cleaned before the math."""
    check_exempt(algo, "mask")
    rollout, stats = batch_for(algo, seed=2)
    poisoned_rollout, poisoned_stats = _nan_off_mask(rollout, stats)
    assert np.isnan(np.asarray(poisoned_rollout.behaviour_logprobs)).any()
    loss, _, grads = jitted(algo)(stats, rollout)
    loss2, metrics2, grads2 = jitted(algo)(poisoned_stats, poisoned_rollout)
    assert np.isfinite(loss2), f"{algo.name}: loss {loss2}"
    for leaf in jax.tree.leaves(grads2):
        assert np.all(np.isfinite(leaf)), f"{algo.name}: non-finite gradient"
    np.testing.assert_allclose(loss, loss2, rtol=1e-5, atol=1e-6)
    assert_close(grads, grads2)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("field", ["logprobs", "entropy", "values"])
def test_misshapen_policy_stats_are_rejected_by_name(algo, field):
    """A [B, 1] array broadcasts against the [B, T] rollout into a finite, wrong
    loss; it must be an error naming the field. Tracing alone raises (shapes
    are static), so nothing is compiled."""
    rollout, stats = batch_for(algo, seed=0)
    bad = stats.replace(**{field: getattr(stats, field)[:, :1]})
    with pytest.raises(ValueError, match=rf"PolicyStats\.{field} must have shape \[B, T\]"):
        jax.eval_shape(lambda s, r: loss_and_grad(algo, algo.Config(), s, r), bad, rollout)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_permutation_invariance(algo):
    check_exempt(algo, "permutation")
    k = group_size(algo)
    rollout, stats = batch_for(algo, seed=4)
    rng = np.random.default_rng(5)
    groups = rng.permutation(BATCH // k)
    order = np.concatenate([g * k + rng.permutation(k) for g in groups])
    permuted_rollout = rollout.select_rows(order)
    permuted_stats = jax.tree.map(lambda x: x[order], stats)
    loss, _, grads = jitted(algo)(stats, rollout)
    loss2, _, grads2 = jitted(algo)(permuted_stats, permuted_rollout)
    np.testing.assert_allclose(loss, loss2, rtol=1e-5, atol=1e-6)
    assert_close(jax.tree.map(lambda x: x[order], grads), grads2)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_jit_matches_eager(algo):
    check_exempt(algo, "jit")
    rollout, stats = batch_for(algo, seed=6)
    with jax.disable_jit():
        eager = loss_and_grad(algo, algo.Config(), stats, rollout)
    compiled = jitted(algo)(stats, rollout)
    assert_close(eager[0], compiled[0], rtol=1e-5)
    assert_close(eager[2], compiled[2], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("pieces", [2, 4])
def test_microbatch_accumulation(algo, pieces):
    check_exempt(algo, "microbatch")
    cfg = algo.Config()
    rollout, stats = batch_for(algo, seed=7)
    state = algo.init_state(cfg)
    adv, state = algo.advantages(rollout, cfg, state)
    loss, metrics, grads = jitted(algo)(stats, rollout)
    rows = BATCH // pieces
    total, parts = 0.0, []
    # Metrics the record declares "sum" are whole-minibatch-normalised: they add up too.
    summed = {k: 0.0 for k in metrics if algo.reduction(k) == "sum"}

    @jax.jit
    def piece_fn(stats_i, rollout_i, adv_i):
        return loss_and_grad(algo, cfg, stats_i, rollout_i, state=state, adv=adv_i)

    for i, micro in enumerate(rollout.microbatches(pieces)):
        sl = slice(i * rows, (i + 1) * rows)
        loss_i, metrics_i, grads_i = piece_fn(jax.tree.map(lambda x: x[sl], stats), micro, jax.tree.map(lambda x: x[sl], adv))
        total += loss_i
        summed = {k: v + metrics_i[k] for k, v in summed.items()}
        parts.append(grads_i)
    accumulated = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    np.testing.assert_allclose(total, loss, rtol=1e-5, atol=1e-6)
    for name, value in summed.items():
        np.testing.assert_allclose(value, metrics[name], rtol=1e-5, atol=1e-6, err_msg=f"{algo.name}: {name} is declared 'sum'")
    assert_close(accumulated, grads)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=IDS)
def test_sharded_equals_single_device(algo):
    check_exempt(algo, "sharding")
    assert jax.device_count() == 8, "tests/conftest.py must set 8 host devices before jax is imported"
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    rollout, stats = batch_for(algo, seed=8)
    expected = jitted(algo)(stats, rollout)

    def shard(x):
        return jax.device_put(x, rows) if getattr(x, "ndim", 0) >= 1 else x

    sharded = jax.jit(
        lambda s, r: loss_and_grad(algo, algo.Config(), s, r)
    )(jax.tree.map(shard, stats), jax.tree.map(shard, rollout))
    assert len(sharded[2].logprobs.sharding.device_set) == 8
    assert_close(sharded[0], expected[0], rtol=1e-5)
    assert_close(sharded[2], expected[2], rtol=1e-4, atol=1e-6)
