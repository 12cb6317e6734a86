"""Stage 4, forwards: behaviour and reference log-probs (and sampling-time
values and top-k for the algorithms that read them), computed by the
training forward pass, only those the algorithm and settings need."""

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

    behaviour: StatsFn
    """Old-policy stats: log-probs (+ values, top-k when the algorithm reads them)."""
    reference: StatsFn
    """Log-probs only, for the frozen reference (and its previous iterate)."""
    moving_reference: Callable | None = None
    """(latest, previous) -> reference log-probs, for a moving reference
    (`Algorithm.reference_logprobs` with the config bound)."""


def with_logprobs(rollout: Rollout, forwards: Forwards, params, ref_params, prev_ref_params, step: int) -> Rollout:
    """The rollout with behaviour log-probs recomputed at the sampling
    temperature (the sampler's own go to `inference_logprobs`), reference
    log-probs, old values / top-k where computed, and `policy_version`."""
    mask = rollout.loss_mask
    old = forwards.behaviour(params, rollout.tokens)
    ref_logprobs = forwards.reference(ref_params, rollout.tokens).logprobs
    if prev_ref_params is not None:
        previous = forwards.reference(prev_ref_params, rollout.tokens).logprobs
        ref_logprobs = forwards.moving_reference(ref_logprobs, previous)
    extra = {}
    if old.values is not None:
        extra["old_values"] = jnp.where(mask, old.values, 0.0)
    if old.topk_logprobs is not None:
        extra["old_topk_logprobs"] = old.topk_logprobs
    return host_readable(rollout.replace(
        inference_logprobs=rollout.behaviour_logprobs,
        behaviour_logprobs=jnp.where(mask, old.logprobs, 0.0),
        ref_logprobs=jnp.where(mask, ref_logprobs, 0.0),
        policy_version=jnp.full((rollout.batch_size,), step, jnp.int32),
        **extra,
    ))
