"""Current-policy statistics of a rollout's tokens, without [B, T, V] logits.

For tokens x and final hidden states h = f_θ(x) [B, T, D], the model's
prediction for position t + 1 is

    log π_θ(x_{t+1} | x_{≤t}) = log_softmax(h_t W_out / τ)[x_{t+1}]
    H_t                       = −Σ_v π_θ(v | x_{≤t}) log π_θ(v | x_{≤t})

`token_stats` aligns these with the Rollout rule: entry [b, t] is about
token x_t, predicted from x_{<t}, and entry 0 is 0.

Memory: the output projection, log-softmax and gathers run over sequence
chunks of `chunk_size` positions inside `lax.scan`, and each chunk is
rematerialised (`jax.checkpoint`) in the backward pass, so neither the
forward nor the gradient ever holds float32 logits for the whole batch:
the peak is O(B · chunk_size · V) instead of O(B · T · V). The numbers are
those of the plain full-logits reference (`token_logprobs`,
`token_entropy` below) up to float32 rounding.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from rlzoo.policy.model import matmul_rows
from rlzoo.rollout import PolicyStats

Array = jax.Array

DEFAULT_CHUNK = 128


def _chunk_stats(h: Array, w: Array, targets: Array, *, temperature, entropy: bool, topk: int):
    """Stats of one chunk: h [B, C, D], w [D, V], targets [B, C]."""
    logits = matmul_rows(h, w, preferred_element_type=jnp.float32)
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):
        logits = logits / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    out = {"logprobs": jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]}
    if entropy:
        out["entropy"] = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    if topk:
        out["topk_logprobs"] = jax.lax.top_k(logp, topk)[0]
    return out


def chunked_head_stats(
    h: Array,
    w: Array,
    targets: Array,
    *,
    entropy: bool = False,
    topk: int = 0,
    temperature: float | Array = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Array]:
    """Per-position stats of the distributions softmax(h_t W / τ) for the
    targets [B, T]: {"logprobs": [B, T], "entropy": [B, T], "topk_logprobs":
    [B, T, k]} (no shift; position t scores targets[:, t]). Computed over
    sequence chunks with rematerialisation; float32 accumulation."""
    batch, length, dim = h.shape
    chunk = max(1, min(chunk_size, length))
    num_chunks = -(-length // chunk)
    padded = num_chunks * chunk
    if padded != length:
        h = jnp.pad(h, ((0, 0), (0, padded - length), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, padded - length)))
    fn = functools.partial(_chunk_stats, temperature=temperature, entropy=entropy, topk=topk)
    if num_chunks == 1:
        out = fn(h, w, targets)
    else:
        hs = h.reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)
        ys = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)
        body = jax.checkpoint(lambda hc, yc: fn(hc, w, yc), prevent_cse=False)
        _, stacked = jax.lax.scan(lambda carry, xs: (carry, body(*xs)), None, (hs, ys))
        out = {
            name: value.swapaxes(0, 1).reshape(batch, padded, *value.shape[3:])
            for name, value in stacked.items()
        }
    return {name: value[:, :length] for name, value in out.items()}


def _shift_right(x: Array) -> Array:
    """Position t's prediction scores token t + 1: move it there, 0 at t = 0."""
    pad = [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x[:, :-1], pad)


def token_stats(
    model,
    tokens: Array,
    *,
    entropy: bool = False,
    values: bool = False,
    topk: int = 0,
    temperature: float | Array = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
    positions: Array | None = None,
    attention_mask: Array | None = None,
) -> PolicyStats:
    """What the current policy says about `tokens` [B, T], as `PolicyStats`.

    logprobs[b, t] = log π_θ(tokens[b, t] | tokens[b, :t]) at temperature τ
    (0 at t = 0); on request entropy[b, t] of that distribution, values[b, t]
    = V_θ(tokens[b, :t]) from the value head, and topk_logprobs[b, t] the k
    largest log-probs. Pure and jit-able; differentiable w.r.t. the model's
    parameters (call it on the merged module inside `jax.grad`).
    """
    h = model.hidden(tokens, positions, attention_mask=attention_mask)
    w = model.output_weight().astype(model.cfg.dtype)
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
    out = chunked_head_stats(
        h, w, targets, entropy=entropy, topk=topk, temperature=temperature, chunk_size=chunk_size
    )
    return PolicyStats(
        logprobs=_shift_right(out["logprobs"]),
        entropy=_shift_right(out["entropy"]) if entropy else None,
        values=_shift_right(model.values(h)) if values else None,
        topk_logprobs=_shift_right(out["topk_logprobs"]) if topk else None,
    )


# Token log-probs and entropy from full logits (plain reference version)

def token_logprobs(logits: Array, tokens: Array) -> Array:
    """[B, T] log π(tokens[b, t] | tokens[b, :t]) from logits [B, T, V], where
    logits[b, t] is the model's prediction for position t + 1. Position 0
    has no prediction and gets 0. Computed in float32."""
    chex.assert_rank([logits, tokens], [3, 2])
    chex.assert_equal_shape_prefix([logits, tokens], 2)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(picked, ((0, 0), (1, 0)))


def token_entropy(logits: Array) -> Array:
    """[B, T] entropy of the distribution that predicts position t (0 at t = 0)."""
    chex.assert_rank(logits, 3)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.pad(entropy, ((0, 0), (1, 0)))


def plain_token_stats(
    model,
    tokens: Array,
    *,
    entropy: bool = False,
    values: bool = False,
    topk: int = 0,
    temperature: float | Array = 1.0,
) -> PolicyStats:
    """The same statistics from full [B, T, V] logits (`token_logprobs`,
    `token_entropy`; for tests and benchmarks)."""
    h = model.hidden(tokens)
    logits = model.logits(h) / temperature
    top = None
    if topk:
        logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        top = jnp.pad(jax.lax.top_k(logp, topk)[0], ((0, 0), (1, 0), (0, 0)))
    return PolicyStats(
        logprobs=token_logprobs(logits, tokens),
        entropy=token_entropy(logits) if entropy else None,
        values=_shift_right(model.values(h)) if values else None,
        topk_logprobs=top,
    )
