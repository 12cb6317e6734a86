"""Stage 4, forwards: behaviour and reference log-probs (and sampling-time
values and top-k for the algorithms that read them), computed by the
training forward pass, only those the algorithm and settings need:

* no behaviour forward when the update is exactly on-policy (one epoch, one
  minibatch, nothing reads old values, old top-k or the sampler's own
  log-probs): the sampler's log-probs stand in until the update, which uses
  stop_gradient of the current ones (`make_update(on_policy=True)`), so the
  ratio is exactly 1 as the recompute would make it;
* no reference forward when no term reads `ref_logprobs`."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from rlzoo.rollout import Rollout
from rlzoo.sharding import host_readable

StatsFn = Callable[[Any, jax.Array], Any]
"""(params, tokens) -> PolicyStats (a jitted `update.policy_stats_fn`)."""


@dataclasses.dataclass(frozen=True)
class Forwards:
    """The compiled forwards of one run."""

    behaviour: StatsFn | None
    """Old-policy stats: log-probs (+ values, top-k when the algorithm reads
    them); None: keep the sampler's log-probs (an exactly on-policy update)."""
    reference: StatsFn | None
    """Log-probs only, for the frozen reference (and its previous iterate);
    None: nothing reads the reference."""
    moving_reference: Callable | None = None
    """(latest, previous) -> reference log-probs, for a moving reference
    (`Algorithm.reference_logprobs` with the config bound)."""


def with_logprobs(rollout: Rollout, forwards: Forwards, params, ref_params, prev_ref_params, step: int) -> Rollout:
    """The rollout with behaviour log-probs recomputed at the sampling
    temperature (the sampler's own go to `inference_logprobs`), reference
    log-probs, old values / top-k where computed, and `policy_version`."""
    mask = rollout.loss_mask
    extra = {}
    if forwards.reference is not None:
        ref_logprobs = forwards.reference(ref_params, rollout.tokens).logprobs
        if prev_ref_params is not None:
            previous = forwards.reference(prev_ref_params, rollout.tokens).logprobs
            ref_logprobs = forwards.moving_reference(ref_logprobs, previous)
        extra["ref_logprobs"] = jnp.where(mask, ref_logprobs, 0.0)
    if forwards.behaviour is not None:
        old = forwards.behaviour(params, rollout.tokens)
        extra["behaviour_logprobs"] = jnp.where(mask, old.logprobs, 0.0)
        if old.values is not None:
            extra["old_values"] = jnp.where(mask, old.values, 0.0)
        if old.topk_logprobs is not None:
            extra["old_topk_logprobs"] = old.topk_logprobs
    return host_readable(rollout.replace(
        inference_logprobs=rollout.behaviour_logprobs,
        policy_version=jnp.full((rollout.batch_size,), step, jnp.int32),
        **extra,
    ))
