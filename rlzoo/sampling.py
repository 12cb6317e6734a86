"""Jitted KV-cache sampling: prompts in, a `Rollout` out.

One compiled function per (prompts G, samples K, prompt bucket P, new tokens N,
top-k, top-p on/off, greedy on/off) does everything on device:

1. prefill: the G left-padded prompts [G, P] run once through the model,
   writing keys/values into a cache of P + N slots; the cache and the last
   position's logits are then repeated K times (rows prompt-major), so the
   prompt is processed once per prompt, not once per sample;
2. decode: a `lax.while_loop` samples one token per row per step from
   softmax(z / τ) restricted to the top-k tokens and to the smallest set of
   most likely tokens whose mass reaches top-p, feeds it back at cache slot
   P + i, and stops when every row has produced an end token or N tokens;
   long generations run as a few such loops (`decode_segment_ends`), each
   over a cache that ends at its last slot, so attention reads only the
   filled part of the cache (up to one segment more);
3. re-alignment: each row is rolled left by its padding, so tokens =
   prompt + response, right-padded, as the Rollout rule wants.

`behaviour_logprobs[b, t]` is log μ(tokens[b, t]) under the distribution μ
actually sampled from (temperature-scaled and top-k / top-p truncated and
renormalised), so with τ = 1, top_k = 0, top_p = 1 it equals the model's
log-probs that `rlzoo.policy.token_stats` recomputes. Greedy decoding
(τ = 0) samples from a point mass; its rollouts record the model's
log-probs at τ = 1 instead (the point mass would give 0 everywhere).
`sample_entropy` holds the entropy of μ (of the τ = 1 distribution for
greedy).

When the model's parameters are sharded over a mesh, the batch (prompts,
KV cache, outputs) is split over its `data`/`fsdp` axes and the cache's
heads over `tensor`; in a multi-host run the outputs are then replicated
so that every process can read the completions (`host_readable`).

Prompt lengths are padded up to a bucket (powers of two from `min_bucket`)
so a new prompt length rarely triggers a new compilation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlzoo.rollout import Rollout, validate
from rlzoo.sharding import BATCH_AXES, fit_spec, host_readable

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _Static:
    num_samples: int
    max_new_tokens: int
    top_k: int
    top_p: bool
    greedy: bool


def sampling_distribution(
    logits: Array, temperature: Array | float, top_k: int, top_p: Array | float | None
) -> tuple[Array, Array | None]:
    """The log-probs of the sampling distribution μ over candidate tokens.

    logits [B, V] -> (log μ [B, C], candidate ids [B, C] or None when
    C = V in vocabulary order). Candidates are the top-k tokens (all when
    k = 0); with top-p, a candidate is kept while the mass of the strictly
    more likely candidates is < p (so at least one is kept). Dropped
    candidates get log μ = −∞.
    """
    z = logits.astype(jnp.float32) / temperature
    ids = None
    if top_k:
        z, ids = jax.lax.top_k(z, min(top_k, z.shape[-1]))
    elif top_p is not None:
        z, ids = jax.lax.top_k(z, z.shape[-1])
    if top_p is not None:
        probs = jax.nn.softmax(z, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep = (mass_before < top_p).at[..., 0].set(True)
        z = jnp.where(keep, z, -jnp.inf)
    return jax.nn.log_softmax(z, axis=-1), ids


def categorical_inverse_cdf(key: Array, logq: Array) -> Array:
    """One draw per row from the categorical μ = exp(logq) [B, C] -> ids [B].

    Inverse-CDF sampling: with u ~ U[0, 1) and the running mass
    F_j = Σ_{i ≤ j} μ_i, the draw is the first j with F_j > u · F_{C−1}.
    It needs one uniform per row, where the Gumbel-max trick
    (`jax.random.categorical`) needs C of them and two logarithms each; at
    decode shapes that was 8% of generation (benchmarks/profile_step.py).
    A token with μ = 0 never satisfies the test first, because F does not
    rise at it; rounding that puts u · F at or past F's last value is
    clamped to the last token with μ > 0. The float32 running sum can shift
    each token's probability by a few ulps of the total, far below any
    sampling noise a test or a run can see.
    """
    return inverse_cdf_index(jax.random.uniform(key, logq.shape[:-1], jnp.float32), logq)


def inverse_cdf_index(u: Array, logq: Array) -> Array:
    """u [B] in [0, 1], logq [B, C] -> the first j with F_j > u · F_{C−1}
    (clamped to the last token with μ > 0, so u = 1 is safe)."""
    probs = jnp.exp(logq)
    mass = jnp.cumsum(probs, axis=-1)
    draw = jnp.sum(mass <= u[..., None] * mass[..., -1:], axis=-1)
    positions = jnp.arange(logq.shape[-1])
    last_possible = jnp.max(jnp.where(probs > 0, positions, 0), axis=-1)
    return jnp.minimum(draw, last_possible)


def _sample_step(logits, key, temperature, top_p, static: _Static):
    """One token per row: (token [B], log μ(token) [B], entropy of μ [B])."""
    if static.greedy:
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token = jnp.argmax(logits, axis=-1)
        picked = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
        entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
        return token.astype(jnp.int32), picked, entropy
    logq, ids = sampling_distribution(logits, temperature, static.top_k, top_p if static.top_p else None)
    choice = categorical_inverse_cdf(key, logq)
    picked = jnp.take_along_axis(logq, choice[:, None], axis=-1)[:, 0]
    finite = jnp.isfinite(logq)
    entropy = -jnp.sum(jnp.where(finite, jnp.exp(logq) * logq, 0.0), axis=-1)
    token = choice if ids is None else jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0]
    return token.astype(jnp.int32), picked, entropy


def _on_batch_axes(x: Array, mesh, rest=()) -> Array:
    """Constrain x's rows to the mesh's batch axes (no-op without a mesh)."""
    if mesh is None:
        return x
    spec = fit_spec((BATCH_AXES,) + tuple(rest), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _model_mesh(state) -> jax.sharding.Mesh | None:
    """The mesh the model's parameters live on, if they are sharded over one."""
    for leaf in jax.tree.leaves(state):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding) and sharding.mesh.size > 1:
            return sharding.mesh
    return None


def _generate(graphdef, static: _Static, mesh, counter: list, state, prompts, lengths, rng,
              temperature, top_p, eos_ids, pad_id):
    counter.append(1)  # runs once per trace: counts compilations
    model = nnx.merge(graphdef, state)
    prompts, lengths = _on_batch_axes(prompts, mesh), _on_batch_axes(lengths, mesh)
    groups, prompt_len = prompts.shape
    k, n = static.num_samples, static.max_new_tokens
    batch, slots = groups * k, prompt_len + n

    # Prefill the G distinct prompts (left-padded) into an empty cache.
    left_pad = prompt_len - lengths                                        # [G]
    slot = jnp.arange(prompt_len)
    prompt_valid = slot[None, :] >= left_pad[:, None]                      # [G, P]
    positions = jnp.maximum(slot[None, :] - left_pad[:, None], 0)
    mask = jnp.tril(jnp.ones((prompt_len, prompt_len), bool))[None] & prompt_valid[:, None, :]
    segment_ends = decode_segment_ends(n)
    cache = model.init_cache(groups, prompt_len + segment_ends[0])
    hidden, cache = model.forward_cached(prompts, positions, mask, cache, 0)
    logits = model.logits(hidden[:, -1])                                   # [G, V]

    # K samples per prompt, prompt-major.
    repeat = lambda x: jnp.repeat(x, k, axis=0)  # noqa: E731
    cache = jax.tree.map(lambda c: _on_batch_axes(repeat(c), mesh, ("tensor",)), cache)
    logits = _on_batch_axes(repeat(logits), mesh)
    lengths_b, left_pad_b = repeat(lengths), repeat(left_pad)
    key_valid = jnp.concatenate([repeat(prompt_valid), jnp.ones((batch, n), bool)], axis=1)

    def decode(carry, end):
        """Steps up to new token `end`, over a cache of prompt_len + end slots."""
        filled = prompt_len + end

        def cond(carry):
            i, _, _, done, *_ = carry
            return (i < end) & ~jnp.all(done)

        def body(carry):
            i, logits, cache, done, out_tok, out_logp, out_ent = carry
            token, logp, entropy = _sample_step(logits, jax.random.fold_in(rng, i), temperature, top_p, static)
            token = jnp.where(done, pad_id, token)
            out_tok = out_tok.at[:, i].set(token)
            out_logp = out_logp.at[:, i].set(jnp.where(done, 0.0, logp))
            out_ent = out_ent.at[:, i].set(jnp.where(done, 0.0, entropy))
            done = done | jnp.any(token[:, None] == eos_ids[None, :], axis=1)
            step_mask = (jnp.arange(filled) <= prompt_len + i)[None, None, :] & key_valid[:, None, :filled]
            hidden, cache = model.forward_cached(
                token[:, None], (lengths_b + i)[:, None], step_mask, cache, prompt_len + i
            )
            return i + 1, model.logits(hidden[:, 0]), cache, done, out_tok, out_logp, out_ent

        return jax.lax.while_loop(cond, body, carry)

    carry = (
        jnp.int32(0), logits, cache, jnp.zeros((batch,), bool),
        jnp.full((batch, n), pad_id, jnp.int32),
        jnp.zeros((batch, n), jnp.float32), jnp.zeros((batch, n), jnp.float32),
    )
    for segment, end in enumerate(segment_ends):
        if segment:
            i, logits, cache, *rest = carry
            cache = model.extend_cache(cache, prompt_len + end)
            cache = jax.tree.map(lambda c: _on_batch_axes(c, mesh, ("tensor",)), cache)
            carry = (i, logits, cache, *rest)
        carry = decode(carry, end)
    _, _, _, done, out_tok, out_logp, out_ent = carry

    # Generated tokens up to and including the first end token.
    is_eos = jnp.any(out_tok[:, :, None] == eos_ids[None, None, :], axis=-1)
    first_eos = jnp.argmax(is_eos, axis=1)
    has_eos = jnp.any(is_eos, axis=1)
    num_generated = jnp.where(has_eos, first_eos + 1, n)
    generated = jnp.arange(n)[None, :] < num_generated[:, None]

    # Roll each row left by its padding: prompt + response, right-padded.
    index = (jnp.arange(slots)[None, :] + left_pad_b[:, None]) % slots
    roll = lambda x: jnp.take_along_axis(x, index, axis=1)  # noqa: E731
    tokens = roll(jnp.concatenate([repeat(prompts), jnp.where(generated, out_tok, pad_id)], axis=1))
    mask = roll(jnp.concatenate([jnp.zeros((batch, prompt_len), bool), generated], axis=1))
    zeros = jnp.zeros((batch, prompt_len), jnp.float32)
    logp = roll(jnp.concatenate([zeros, jnp.where(generated, out_logp, 0.0)], axis=1))
    entropy = roll(jnp.concatenate([zeros, jnp.where(generated, out_ent, 0.0)], axis=1))
    return {
        "tokens": tokens, "loss_mask": mask, "behaviour_logprobs": logp,
        "sample_entropy": entropy, "truncated": ~has_eos,
    }


DECODE_SEGMENT = 128
"""New tokens per decode segment (see `decode_segment_ends`)."""
MAX_DECODE_SEGMENTS = 8


def decode_segment_ends(max_new_tokens: int) -> tuple[int, ...]:
    """Where the decode loop's segments end, in new tokens.

    Each segment is its own `while_loop` over a KV cache that holds only the
    prompt and the segment's slots, so step i attends over at most
    P + (end of its segment) keys instead of P + N. Every segment compiles
    its own loop body: segments are DECODE_SEGMENT new tokens long (a single
    one up to that length) and there are at most MAX_DECODE_SEGMENTS of them.
    """
    length = max(DECODE_SEGMENT, -(-max_new_tokens // MAX_DECODE_SEGMENTS))
    return tuple(min(end, max_new_tokens) for end in range(length, max_new_tokens + length, length))


def bucket_length(length: int, min_bucket: int = 16, buckets: Sequence[int] | None = None) -> int:
    """The padded prompt length for a longest prompt of `length` tokens:
    the smallest of `buckets` that fits, else the next power of two >= min_bucket."""
    if buckets:
        for b in sorted(buckets):
            if b >= length:
                return b
    size = min_bucket
    while size < length:
        size *= 2
    return size


class Sampler:
    """Samples K completions per prompt with a KV cache, inside one jitted loop.

    Compiled functions are cached per (model structure, static sampling
    settings) and, by `jax.jit`, per array shapes; prompt lengths are
    bucketed. `num_compilations` counts traces (for tests and logging).
    """

    def __init__(self, *, min_bucket: int = 16, buckets: Sequence[int] | None = None):
        self.min_bucket = min_bucket
        self.buckets = tuple(buckets) if buckets else None
        self._functions: dict[Any, Any] = {}
        self._traces: list = []

    @property
    def num_compilations(self) -> int:
        return len(self._traces)

    def __call__(
        self,
        model,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        rng: Array,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_id: int | Sequence[int],
        pad_id: int,
    ) -> Rollout:
        if not prompts:
            raise ValueError("need at least one prompt")
        lengths = np.array([len(p) for p in prompts], np.int32)
        if lengths.min() < 1:
            raise ValueError("every prompt needs at least one token (prepend a BOS token)")
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {num_samples}, {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
        prompt_len = bucket_length(int(lengths.max()), self.min_bucket, self.buckets)
        padded = np.full((len(prompts), prompt_len), pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            padded[row, prompt_len - len(prompt):] = prompt
        vocab = model.cfg.vocab_size
        if padded.max() >= vocab or padded.min() < 0:
            raise ValueError(f"prompt token ids must lie in [0, {vocab}), got range [{padded.min()}, {padded.max()}]")
        eos = np.atleast_1d(np.asarray(eos_id, np.int32))
        greedy = temperature == 0
        static = _Static(num_samples, max_new_tokens, 0 if greedy else int(top_k), (not greedy) and top_p < 1.0, greedy)
        graphdef, state = nnx.split(model)
        mesh = _model_mesh(state)
        key = (graphdef, static, mesh)
        if key not in self._functions:
            self._functions[key] = jax.jit(functools.partial(_generate, graphdef, static, mesh, self._traces))
        out = host_readable(self._functions[key](
            state, padded, lengths, rng, jnp.float32(temperature if not greedy else 1.0),
            jnp.float32(top_p), eos, jnp.int32(pad_id),
        ))
        batch = len(prompts) * num_samples
        rollout = Rollout(
            tokens=out["tokens"],
            loss_mask=out["loss_mask"],
            behaviour_logprobs=out["behaviour_logprobs"],
            rewards=jnp.zeros((batch,), jnp.float32),
            sample_weight=jnp.ones((batch,), jnp.float32),
            group_size=num_samples,
            sample_entropy=out["sample_entropy"],
            truncated=out["truncated"],
        )
        return validate(rollout)


_DEFAULT = Sampler()


def sample(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    num_samples: int,
    max_new_tokens: int,
    rng: Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | Sequence[int],
    pad_id: int,
) -> Rollout:
    """K = `num_samples` completions of each prompt as a Rollout (group_size K,
    rows g*K .. g*K+K−1 from prompt g): tokens = prompt + response, right-padded
    with `pad_id`; loss_mask True on generated tokens up to and including the
    first end token (`eos_id`: one id or several); behaviour log-probs of the
    sampling distribution; rewards 0; truncated where no end token came within
    `max_new_tokens`. temperature 0 = greedy. See `Sampler`."""
    return _DEFAULT(
        model, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens, rng=rng,
        temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id, pad_id=pad_id,
    )


def response_tokens(rollout: Rollout, *, keep_eos: bool = False) -> list[list[int]]:
    """The generated tokens of each row (the loss-masked ones), without the
    final end token unless `keep_eos`."""
    tokens = np.asarray(rollout.tokens)
    mask = np.asarray(rollout.loss_mask)
    truncated = (
        np.asarray(rollout.truncated) if rollout.truncated is not None else np.ones(len(tokens), bool)
    )
    out = []
    for row, row_mask, cut in zip(tokens, mask, truncated):
        ids = row[row_mask].tolist()
        if ids and not keep_eos and not cut:
            ids = ids[:-1]
        out.append(ids)
    return out
