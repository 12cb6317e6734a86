"""The pure update step: loss -> gradients (accumulated over microbatches) ->
optax, jitted once with shardings and donated buffers.

    update = make_update(graphdef, algorithm_loss(algo, cfg), optimizer, microbatches=2, ...)
    train_state, metrics = update(train_state, rollout, adv)

Microbatches split the minibatch at group boundaries and carry the whole
minibatch's normaliser (`Rollout.microbatches`), so the accumulated gradient
is the minibatch gradient exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from rlzoo.policy import token_stats
from rlzoo.registry import Algorithm
from rlzoo.rollout import Rollout


@struct.dataclass
class TrainState:
    params: Any
    """The policy's trainable parameters (an nnx.State)."""
    opt_state: Any
    algo_state: Any
    step: jax.Array
    rng: jax.Array
    """Raw PRNG key data (uint32), so checkpoints hold plain arrays."""


def make_optimizer(learning_rate: float, max_grad_norm: float | None = 1.0, weight_decay: float = 0.0,
                   warmup_steps: int = 0) -> optax.GradientTransformation:
    """AdamW with optional global-norm clipping and linear warm-up."""
    schedule = (
        optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else learning_rate
    )
    parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=weight_decay))
    return optax.chain(*parts)


def policy_stats_fn(graphdef: Any, outputs: frozenset[str], temperature: float, topk: int = 0) -> Callable:
    """(params, tokens) -> PolicyStats with the outputs an algorithm asked for
    (`topk`: k of the top-k log-probs when "topk_logprobs" is among them)."""
    if "topk_logprobs" in outputs and topk < 1:
        raise ValueError("topk_logprobs requested without a top-k size")

    def fn(params, tokens):
        model = nnx.merge(graphdef, params)
        return token_stats(
            model, tokens,
            entropy="entropy" in outputs, values="values" in outputs,
            topk=topk if "topk_logprobs" in outputs else 0, temperature=temperature,
        )

    return fn


def tree_all_finite(tree: Any) -> jax.Array:
    """True when every floating-point leaf of `tree` is finite everywhere."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _stack(parts: list[Rollout]) -> Rollout:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *parts)


LossFn = Callable[[Any, Rollout, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]
"""(stats, rollout, targets, algo_state) -> (loss, metrics)."""

Reductions = Callable[[str], str]
"""metric name -> "sum" | "mean" | "max" | "min" (`Algorithm.reduction`)."""

_COMBINE = {
    "sum": lambda v, n: jnp.sum(v, axis=0), "mean": lambda v, n: jnp.sum(v, axis=0) / n,
    "max": lambda v, n: jnp.max(v, axis=0), "min": lambda v, n: jnp.min(v, axis=0),
}


def algorithm_loss(algo: Algorithm, cfg: Any) -> LossFn:
    """An algorithm's loss with its config bound."""
    return lambda stats, rollout, adv, algo_state: algo.loss(stats, rollout, adv, cfg, algo_state)


def make_update(
    graphdef: Any,
    loss: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    outputs: frozenset[str] = frozenset(),
    topk: int = 0,
    microbatches: int = 1,
    temperature: float = 1.0,
    reduction: Reductions = lambda name: "sum" if name == "loss" else "mean",
    on_policy: bool = False,
) -> Callable[[TrainState, Rollout, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """The un-jitted update function; the trainer jits it with its shardings.

    `outputs` are the PolicyStats extras the loss reads (Algorithm.policy_outputs),
    `topk` their top-k size; `targets` is the advantage [B, T] or a pytree of
    per-row arrays; `reduction` says how each metric combines over microbatches;
    `on_policy`: the rollout was sampled from these very parameters (one epoch,
    one minibatch), so its behaviour log-probs are stop_gradient(current).

    An update whose loss, gradient norm or new parameters are non-finite is
    not applied (the returned state equals the input) and reports
    `update_skipped = 1`; a minibatch with no trained token (all rows weighed
    out) is not applied either."""
    stats_fn = policy_stats_fn(graphdef, outputs, temperature, topk)

    def loss_fn(params, rollout, adv, algo_state):
        stats = stats_fn(params, rollout.tokens)
        if on_policy:  # the behaviour policy is the current one: ratio exactly 1, no recompute
            rollout = rollout.replace(
                behaviour_logprobs=jnp.where(rollout.loss_mask, jax.lax.stop_gradient(stats.logprobs), 0.0)
            )
        return loss(stats, rollout, adv, algo_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(state: TrainState, rollout: Rollout, targets: Any):
        if rollout.normaliser is None:
            rollout = rollout.with_normaliser()
        rows = rollout.batch_size // microbatches
        pieces = _stack(rollout.microbatches(microbatches))
        target_pieces = jax.tree.map(lambda x: x.reshape((microbatches, rows) + x.shape[1:]), targets)

        def one(piece):
            micro, micro_targets = piece
            (value, metrics), grads = grad_fn(state.params, micro, micro_targets, state.algo_state)
            return grads, metrics | {"loss": value}

        def accumulate(grads_sum, piece):
            grads, metrics = one(piece)
            return jax.tree.map(jnp.add, grads_sum, grads), metrics

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grads, per_micro = jax.lax.scan(accumulate, zeros, (pieces, target_pieces))
        # Each metric combines as the algorithm declares: losses normalised by
        # whole-minibatch counts add up, per-microbatch statistics average.
        metrics = {k: _COMBINE[reduction(k)](v, microbatches) for k, v in per_micro.items()}
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
        # A non-finite loss, gradient or result is never applied: the state
        # stays as it was, and the trainer decides whether to stop or skip.
        # Nor is a minibatch without a trained token (every group weighed
        # out): its zero gradient would still move AdamW's moments and weights.
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"]) & tree_all_finite(params)
        trained = jnp.any((rollout.sample_weight[:, None] > 0) & rollout.loss_mask)
        metrics["update_skipped"] = 1.0 - finite.astype(jnp.float32)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite & trained, new, old), new_state, state)
        return new_state, metrics

    return update
