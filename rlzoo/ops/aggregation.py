"""Masks and aggregation: the weight of each token in a loss, and every way a
per-token, per-row, per-pair or per-group loss is reduced to the
minibatch's scalar.

The counts come from `rollout.normaliser` when set (microbatches of one
minibatch), so summing microbatch losses reproduces the minibatch loss.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

from rlzoo.rollout import PolicyStats, Rollout, validate_stats, zero_untrained

Array = jax.Array

Aggregation = Literal[
    "token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
]
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__


# --------------------------------------------------------------------------
# Token weights
# --------------------------------------------------------------------------

def weighted_mask(rollout: Rollout) -> Array:
    """[B, T] f32: loss_mask · sample_weight, the weight of each token in every loss."""
    return jnp.where(rollout.loss_mask, rollout.sample_weight.astype(jnp.float32)[:, None], 0.0)


def loss_inputs(
    stats: PolicyStats, rollout: Rollout, adv: Array | None = None
) -> tuple[PolicyStats, Rollout, Array | None]:
    """The inputs of a per-token loss, checked and cleaned: `stats` validated
    against the rollout (`validate_stats`), and every per-token float of
    stats, rollout and the advantage `adv` [B, T] set to 0 where loss_mask is
    False (`zero_untrained`), so that NaN / ±∞ padding reaches neither the
    loss nor its gradient. A loss calls this before any math on the inputs:
    a `where` on its output alone would still let ∂exp(NaN) · 0 = NaN into
    the gradient."""
    validate_stats(stats, rollout)
    stats, rollout = zero_untrained(stats, rollout)
    if adv is not None:
        chex.assert_equal_shape([adv, rollout.loss_mask])
        adv = jnp.where(rollout.loss_mask, adv, 0.0)
    return stats, rollout, adv


def _normaliser(rollout: Rollout) -> tuple[Array, Array]:
    norm = rollout.normaliser
    if norm is None:
        norm = rollout.with_normaliser().normaliser
    return norm.tokens, norm.rows


def token_weights(rollout: Rollout, mode: Aggregation, norm_len: int | None = None) -> Array:
    """[B, T] weights w with aggregate(ℓ) = Σ_{b,t} w_{b,t} ℓ_{b,t}.

    With m = loss_mask · sample_weight, L_b = Σ_t loss_mask[b, t], and the
    whole-minibatch counts N_tok = Σ m and N_seq = Σ_b sample_weight[b]:

        token-mean               w = m / N_tok                (DAPO)
        token-sum                w = m
        seq-mean-token-mean      w = m / (L_b · N_seq)        (GRPO, GSPO)
        seq-mean-token-sum       w = m / N_seq                (REINFORCE, RLOO)
        seq-mean-token-sum-norm  w = m / (norm_len · N_seq)   (Dr.GRPO; norm_len defaults to T)

    The counts come from `rollout.normaliser` when set (microbatches of one
    minibatch), so summing microbatch losses reproduces the minibatch loss.
    """
    mask = weighted_mask(rollout)
    n_tokens, n_rows = _normaliser(rollout)
    if mode == "token-mean":
        return mask / jnp.maximum(n_tokens, 1.0)
    if mode == "token-sum":
        return mask
    n_rows = jnp.maximum(n_rows, 1e-8)
    if mode == "seq-mean-token-mean":
        lengths = jnp.maximum(jnp.sum(rollout.loss_mask, axis=1, keepdims=True), 1)
        return mask / (lengths * n_rows)
    if mode == "seq-mean-token-sum":
        return mask / n_rows
    if mode == "seq-mean-token-sum-norm":
        length = rollout.seq_len if norm_len is None else norm_len
        return mask / (length * n_rows)
    raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}")


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------

def aggregate(per_token: Array, rollout: Rollout, mode: Aggregation, norm_len: int | None = None) -> Array:
    """Scalar Σ_{b,t} w_{b,t} ℓ_{b,t} with the weights of `token_weights`.

    `jnp.where` rather than a product keeps a non-finite ℓ off the mask from
    poisoning the sum."""
    chex.assert_equal_shape([per_token, rollout.loss_mask])
    weights = token_weights(rollout, mode, norm_len)
    return jnp.sum(jnp.where(weights != 0, per_token * weights, 0.0))


def aggregate_rows(per_row: Array, rollout: Rollout) -> Array:
    """Scalar mean of a per-row loss over the minibatch: Σ_b sample_weight_b ℓ_b / N_seq."""
    chex.assert_equal_shape([per_row, rollout.sample_weight])
    _, n_rows = _normaliser(rollout)
    weight = rollout.sample_weight.astype(jnp.float32)
    return jnp.sum(jnp.where(weight != 0, per_row * weight, 0.0)) / jnp.maximum(n_rows, 1e-8)


def aggregate_pairs(per_pair: Array, pair_weight: Array, rollout: Rollout) -> Array:
    """Σ over decided pairs of the per-pair loss, divided by the minibatch's
    number of kept pairs (N_seq / 2, from the normaliser), so microbatches
    sum to the minibatch loss. Tied pairs add 0 to the sum."""
    chex.assert_equal_shape([per_pair, pair_weight])
    _, n_rows = _normaliser(rollout)
    total = jnp.sum(jnp.where(pair_weight != 0, per_pair * pair_weight, 0.0))
    return total / jnp.maximum(n_rows / 2.0, 1e-8)


def aggregate_group_pairs(per_pair: Array, pair_weight: Array, rollout: Rollout) -> Array:
    """Σ_{g, i<j} w_gij ℓ_gij / (N_seq (K − 1) / 2): the mean over the
    minibatch's pairs, with the pair count taken from the whole-minibatch
    normaliser (N_seq (K − 1)/2 pairs when every row is kept), so
    microbatches sum to the minibatch loss. For K = 2 this is
    `aggregate_pairs`."""
    chex.assert_equal_shape([per_pair, pair_weight])
    _, n_rows = _normaliser(rollout)
    total = jnp.sum(jnp.where(pair_weight != 0, per_pair * pair_weight, 0.0))
    return total / jnp.maximum(n_rows * (rollout.group_size - 1) / 2.0, 1e-8)


def aggregate_groups(per_group: Array, group_weight: Array, rollout: Rollout) -> Array:
    """Σ_g w_g ℓ_g / (N_seq / K): the mean of a per-group loss over the
    minibatch's groups, with the group count from the whole-minibatch
    normaliser, so microbatches (split at group boundaries) sum to the
    minibatch loss. For K = 2 this is `aggregate_pairs`."""
    chex.assert_equal_shape([per_group, group_weight])
    _, n_rows = _normaliser(rollout)
    total = jnp.sum(jnp.where(group_weight != 0, per_group * group_weight, 0.0))
    return total / jnp.maximum(n_rows / rollout.group_size, 1e-8)
