"""A decoder-only transformer for the Llama / Qwen2 / Qwen3 family, in Flax NNX.

One residual block, `L` times:

    h = x + Attn(RMSNorm(x))
    y = h + MLP(RMSNorm(h))

and around the stack

    logits = RMSNorm(y_L) · W_out,     W_out = W_embᵀ when embeddings are tied.

RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467), over the last axis of size d:

    RMSNorm(x) = x / √(mean_i(x_i²) + ε) ⊙ g

RoPE (Su et al. 2021, arXiv:2104.09864), "rotate-half" layout of Llama /
GPT-NeoX: with θ_i = base^(−2i/d) for i < d/2, a head vector x at position p
becomes

    x'_i       = x_i cos(p θ_i) − x_{i+d/2} sin(p θ_i)
    x'_{i+d/2} = x_{i+d/2} cos(p θ_i) + x_i sin(p θ_i)

(Llama 3 additionally rescales the θ_i of long wavelengths, `RopeScaling`).

Grouped-query attention (Ainslie et al. 2023, arXiv:2305.13245): H query
heads share H_kv key/value heads, G = H / H_kv queries per group; query head
h reads key/value head ⌊h / G⌋:

    A_h = softmax(q_h k_{⌊h/G⌋}ᵀ / √d_head + M) v_{⌊h/G⌋},   M_ts = 0 if s may be seen from t else −∞

Qwen2 adds biases to the q, k, v projections; Qwen3 applies an RMSNorm over
d_head to each query and key head before RoPE ("q/k norm").

SwiGLU MLP (Shazeer 2020, arXiv:2002.05202):

    MLP(x) = W_down (silu(W_gate x) ⊙ W_up x),   silu(z) = z σ(z)

Dtypes: parameters are stored in `param_dtype` and cast to the compute
`dtype` for the matmuls; RMSNorm statistics, RoPE angles and attention
softmax are computed in float32; logits (and anything derived from them)
are always float32.

Every parameter is an `nnx.Param` annotated (`out_sharding`) with mesh axis
names of `rlzoo.sharding` (`fsdp` for the model dimension, `tensor` for
heads / MLP width / vocabulary); `rlzoo.policy.param_shardings` turns the
annotations into `NamedSharding`s for a mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlzoo.sharding import fit_spec

Array = jax.Array

# Partition annotations (mesh axis names per parameter dimension).
EMBED_SPEC = ("tensor", "fsdp")       # [V, D]: vocabulary-parallel
IN_PROJ_SPEC = ("fsdp", "tensor")     # [D, out]: column-parallel (q, k, v, gate, up, lm_head)
OUT_PROJ_SPEC = ("tensor", "fsdp")    # [in, D]: row-parallel (o, down)
BIAS_SPEC = ("tensor",)
NORM_SPEC = (None,)
VALUE_SPEC = ("fsdp", None)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3 RoPE frequency rescaling (`rope_type: "llama3"` in HF configs).

    With wavelength λ_i = 2π / θ_i, L = original_max_position_embeddings:
    λ_i < L / high_freq_factor keeps θ_i; λ_i > L / low_freq_factor uses
    θ_i / factor; in between, θ_i ← (1 − s) θ_i / factor + s θ_i with
    s = (L / λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor).
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


def _dtype_name(value: Any) -> str:
    return jnp.dtype(value).name


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of a decoder; hashable, so it is a static argument."""

    vocab_size: int
    """V: number of token ids (rows of the embedding)."""
    dim: int
    """D: width of the residual stream."""
    num_layers: int
    """L: number of transformer blocks."""
    num_heads: int
    """H: query heads."""
    num_kv_heads: int
    """H_kv: key/value heads (H must be a multiple; H_kv = H is plain multi-head attention)."""
    head_dim: int
    """d_head: width of each attention head (not necessarily D / H, e.g. Qwen3)."""
    mlp_dim: int
    """F: hidden width of the SwiGLU MLP."""
    rope_theta: float = 10_000.0
    """RoPE base."""
    norm_eps: float = 1e-6
    """ε of every RMSNorm."""
    tie_embeddings: bool = False
    """Output projection = transpose of the input embedding."""
    qkv_bias: bool = False
    """Biases on the q, k, v projections (Qwen2)."""
    qk_norm: bool = False
    """RMSNorm over d_head on each query and key head before RoPE (Qwen3)."""
    param_dtype: str = "float32"
    """Storage dtype of the parameters ("float32" or "bfloat16")."""
    dtype: str = "float32"
    """Compute dtype of the matmuls; logits and log-probs are float32 regardless."""
    value_head: bool = False
    """Add a scalar value head V(h) = h · w + b on the final hidden state (critic-based algorithms)."""
    max_seq_len: int = 2048
    """Longest sequence the model was trained for (informational; RoPE has no hard limit)."""
    rope_scaling: RopeScaling | None = None
    """Llama 3 frequency rescaling, None for plain RoPE."""
    remat: bool = False
    """Rematerialise each block in the backward pass (less activation memory, one extra forward)."""
    attention_chunk: int = 0
    """Query block size of memory-efficient attention: scores are computed (and, under
    `jax.grad`, recomputed) one block of queries at a time, O(chunk · T) instead of
    O(T²) memory. 0 = all queries at once."""
    init_std: float = 0.02
    """Standard deviation of the normal initialiser of every weight matrix."""

    def __post_init__(self):
        object.__setattr__(self, "param_dtype", _dtype_name(self.param_dtype))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name} must be float32, bfloat16 or float16, got {getattr(self, name)}")

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        d, hd = self.dim, self.head_dim
        attn = d * hd * (2 * self.num_heads + 2 * self.num_kv_heads)
        if self.qkv_bias:
            attn += hd * (self.num_heads + 2 * self.num_kv_heads)
        if self.qk_norm:
            attn += 2 * hd
        block = attn + 3 * d * self.mlp_dim + 2 * d
        total = self.vocab_size * d * (1 if self.tie_embeddings else 2) + self.num_layers * block + d
        return total + (d + 1 if self.value_head else 0)


PRESETS: dict[str, ModelConfig] = {
    # A few-layer model for tests and built-in tasks (byte tokenizer fits in its vocabulary).
    "tiny": ModelConfig(
        vocab_size=512, dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
        mlp_dim=128, rope_theta=10_000.0, norm_eps=1e-6, max_seq_len=512,
    ),
    # HuggingFaceTB/SmolLM2-135M(-Instruct)
    "smollm2-135m": ModelConfig(
        vocab_size=49_152, dim=576, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
        mlp_dim=1536, rope_theta=100_000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192,
    ),
    # Qwen/Qwen2.5-0.5B(-Instruct)
    "qwen2.5-0.5b": ModelConfig(
        vocab_size=151_936, dim=896, num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
        mlp_dim=4864, rope_theta=1_000_000.0, norm_eps=1e-6, tie_embeddings=True, qkv_bias=True,
        max_seq_len=32_768,
    ),
    # meta-llama/Llama-3.2-1B(-Instruct)
    "llama-3.2-1b": ModelConfig(
        vocab_size=128_256, dim=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
        mlp_dim=8192, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=131_072,
        rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
    ),
}


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------

def _param(value: Array, spec: Sequence[str | None]) -> nnx.Param:
    # eager_sharding=False: building a model needs no mesh; placement happens
    # through `param_shardings` (or `create_model(..., mesh=...)`).
    return nnx.Param(value, out_sharding=tuple(spec), eager_sharding=False)


def _along_last_axis(vector: Array, ndim: int) -> Array:
    """A [d] vector shaped [1, ..., 1, d] for an ndim-rank operand (explicit
    broadcasting: the tests forbid implicit rank promotion)."""
    return vector.reshape((1,) * (ndim - 1) + vector.shape)


def matmul_rows(x: Array, w: Array, **kwargs) -> Array:
    """x [..., D] @ w [D, F] as one 2-D product over the flattened leading
    axes. Same numbers as `jnp.dot(x, w)`; XLA:CPU runs the weight gradient
    of the 2-D form (a [D, N] x [N, F] product) about 1.5-2x faster than the
    one contracting two batch axes (benchmarks/bench_grpo_step.py)."""
    return jnp.dot(x.reshape(-1, x.shape[-1]), w, **kwargs).reshape(*x.shape[:-1], w.shape[-1])


class Dense(nnx.Module):
    """y = x W (+ b), W of shape [d_in, d_out] (transposed w.r.t. PyTorch)."""

    def __init__(self, d_in: int, d_out: int, *, spec: Sequence[str | None], bias: bool,
                 cfg: ModelConfig, rngs: nnx.Rngs, std: float | None = None):
        std = cfg.init_std if std is None else std
        init = jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32) * std
        self.kernel = _param(init.astype(cfg.param_dtype), spec)
        self.bias = _param(jnp.zeros((d_out,), cfg.param_dtype), (spec[-1],)) if bias else None
        self.dtype = cfg.dtype

    def __call__(self, x: Array) -> Array:
        y = matmul_rows(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + _along_last_axis(self.bias[...].astype(self.dtype), y.ndim)
        return y


class RMSNorm(nnx.Module):
    """RMSNorm(x) = x / √(mean(x²) + ε) ⊙ g over the last axis; statistics in float32."""

    def __init__(self, size: int, *, cfg: ModelConfig):
        self.scale = _param(jnp.ones((size,), cfg.param_dtype), NORM_SPEC)
        self.eps = cfg.norm_eps
        self.dtype = cfg.dtype

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * _along_last_axis(self.scale[...].astype(self.dtype), x.ndim)


def rope_frequencies(cfg: ModelConfig) -> np.ndarray:
    """θ_i = base^(−2i/d_head), i < d_head/2 (float32), Llama-3-rescaled if configured."""
    d = cfg.head_dim
    inv_freq = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    inv_freq = inv_freq.astype(np.float32)
    s = cfg.rope_scaling
    if s is not None:
        old = s.original_max_position_embeddings
        low_wavelen, high_wavelen = old / s.low_freq_factor, old / s.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
        smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv_freq


Rope = tuple[Array, Array]
"""(cos, sin) of the RoPE angles p θ_i, each [B, T, 1, d/2] float32."""


def rope_angles(positions: Array, inv_freq: np.ndarray) -> Rope:
    """(cos, sin) of p θ_i for integer `positions` [B, T] (computed once per forward)."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]  # [B, T, d/2]
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x: Array, rope: Rope) -> Array:
    """Rotate head vectors x [B, T, heads, d] by the angles of `rope_angles`
    (rotate-half layout; products in float32)."""
    cos, sin = rope
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


CAUSAL_BLOCK = 64
"""Query block of causal attention over T >= 4 · CAUSAL_BLOCK tokens (see `attend`)."""


def attend(q: Array, k: Array, v: Array, mask: Array, chunk: int = 0, causal: bool = False) -> Array:
    """Grouped-query attention.

    q [B, T, H, d], k and v [B, H_kv, S, d], mask [B or 1, T, S] (True =
    may attend) -> [B, T, H, d]. Query head h reads key/value head ⌊h / G⌋,
    G = H / H_kv; scores and softmax in float32. A query row with no
    visible key (a padding position) gets a uniform average, never NaN.
    With 0 < chunk < T, queries are processed `chunk` at a time under
    `jax.checkpoint` (same numbers, O(chunk · S) score memory). `causal`
    promises that S = T and mask[b, t, s] is False for s > t; then, from 4
    blocks up, queries are taken CAUSAL_BLOCK at a time, each block against
    the keys up to its last position only, which skips most of the masked
    half of the scores: a forward and backward over 544 tokens takes about
    0.55x the time of the full product on this machine's CPUs (the masked
    entries cost as much softmax work as the visible ones). Below 4 blocks
    the saving is a few percent and each block's shapes compile separately.
    """
    length = q.shape[1]
    if causal and not chunk and length >= 4 * CAUSAL_BLOCK and k.shape[2] == length:
        blocks = []
        for start in range(0, length, CAUSAL_BLOCK):
            end = min(start + CAUSAL_BLOCK, length)
            blocks.append(_attend(q[:, start:end], k[:, :, :end], v[:, :, :end], mask[:, start:end, :end]))
        return jnp.concatenate(blocks, axis=1)
    if chunk and length > chunk:
        num = -(-length // chunk)
        pad = num * chunk - length
        q_blocks = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
        m_blocks = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))
        q_blocks = q_blocks.reshape(q.shape[0], num, chunk, *q.shape[2:]).swapaxes(0, 1)
        m_blocks = m_blocks.reshape(mask.shape[0], num, chunk, mask.shape[-1]).swapaxes(0, 1)
        block = jax.checkpoint(lambda qb, mb: _attend(qb, k, v, mb), prevent_cse=False)
        out = jax.lax.map(lambda xs: block(*xs), (q_blocks, m_blocks))
        out = out.swapaxes(0, 1).reshape(q.shape[0], num * chunk, *q.shape[2:])
        return out[:, :length]
    return _attend(q, k, v, mask)


def _attend(q: Array, k: Array, v: Array, mask: Array) -> Array:
    batch, length, heads, d = q.shape
    kv_heads, slots = k.shape[1], k.shape[2]
    group = heads // kv_heads
    if length == 1:
        return _attend_one_query(q, k, v, mask)
    # The G query heads of a KV head side by side: [B·H_kv, G·T, d]. Each
    # product is then one batched matmul with a single batch axis, which
    # XLA:CPU runs about 1.6x faster (forward and backward) than the 5-D
    # einsum over (b, k, g) (benchmarks/bench_grpo_step.py). For a single
    # query (decoding) the einsum is faster (benchmarks/bench_sampler.py).
    q = q.reshape(batch, length, kv_heads, group, d).transpose(0, 2, 3, 1, 4).reshape(batch * kv_heads, group * length, d)
    scores = jnp.einsum("nqd,nsd->nqs", q, k.reshape(batch * kv_heads, slots, d), preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, kv_heads, group, length, slots) * (1.0 / math.sqrt(d))
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    # softmax(s) v = (exp(s − m) v) / Σ exp(s − m): dividing the [.., d] output
    # instead of the [.., S] weights saves a full pass over the scores, and
    # m (any constant per row) needs no gradient.
    top = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(scores - top)
    total = jnp.sum(weights, axis=-1).reshape(batch * kv_heads, group * length, 1)
    weights = weights.reshape(batch * kv_heads, group * length, slots)
    out = jnp.einsum("nqs,nsd->nqd", weights.astype(v.dtype), v.reshape(batch * kv_heads, slots, d))
    out = (out / total.astype(out.dtype)).astype(v.dtype)
    return out.reshape(batch, kv_heads, group, length, d).transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, d)


def _attend_one_query(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """`_attend` for T = 1, as one einsum over (b, k, g)."""
    batch, length, heads, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(batch, length, kv_heads, heads // kv_heads, d)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, k, preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bksd->btkgd", probs.astype(v.dtype), v)
    return out.reshape(batch, length, heads, d)


KVCache = tuple[Array, Array]
"""One layer's cache: keys [B, H_kv, S, d_head] and values [B, H_kv, d_head, S]
(head-major; the values slot-minor, the layout the weighted-value product
reads, so XLA:CPU does not copy the value cache into it at every decode
step, which took 13% of generation: benchmarks/profile_step.py)."""


class Attention(nnx.Module):
    """Multi-head attention with GQA, RoPE, optional qkv bias and q/k norm."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        hd = cfg.head_dim
        self.q_proj = Dense(cfg.dim, cfg.num_heads * hd, spec=IN_PROJ_SPEC, bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.k_proj = Dense(cfg.dim, cfg.num_kv_heads * hd, spec=IN_PROJ_SPEC, bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.v_proj = Dense(cfg.dim, cfg.num_kv_heads * hd, spec=IN_PROJ_SPEC, bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.o_proj = Dense(cfg.num_heads * hd, cfg.dim, spec=OUT_PROJ_SPEC, bias=False, cfg=cfg, rngs=rngs)
        self.q_norm = RMSNorm(hd, cfg=cfg) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg=cfg) if cfg.qk_norm else None
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.chunk = cfg.attention_chunk

    def __call__(
        self,
        x: Array,
        rope: Rope,
        mask: Array,
        cache: KVCache | None = None,
        cache_index: Array | int | None = None,
    ) -> tuple[Array, KVCache | None]:
        """x [B, T, D] -> ([B, T, D], updated cache); `rope` from `rope_angles`.

        Without a cache, `mask` is [B, T, T]. With a cache (`KVCache`), the
        new keys/values are written at slots cache_index .. cache_index+T−1;
        a mask [B, T, S] attends over the whole cache (decoding), a mask
        [B, T, T] over the new keys only (prefill into an empty cache).
        """
        batch, length, _ = x.shape
        q = self.q_proj(x).reshape(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(batch, length, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope).swapaxes(1, 2)  # [B, H_kv, T, d]
        v = v.swapaxes(1, 2)
        new_cache = None
        if cache is not None:
            k_cache, v_cache = cache
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, cache_index, 0))
            v_cache = jax.lax.dynamic_update_slice(
                v_cache, v.swapaxes(2, 3).astype(v_cache.dtype), (0, 0, 0, cache_index))
            new_cache = (k_cache, v_cache)
            if mask.shape[-1] == k_cache.shape[2] and mask.shape[-1] != length:
                k, v = k_cache.astype(q.dtype), v_cache.swapaxes(2, 3).astype(q.dtype)
            elif mask.shape[-1] != length:
                raise ValueError(
                    f"attention mask has {mask.shape[-1]} key positions; expected {length} "
                    f"(new tokens) or {k_cache.shape[2]} (cache length)"
                )
        # Without a cache, and when prefilling an empty one, the mask is the
        # model's causal mask over the new tokens.
        causal = mask.shape[-1] == length
        out = attend(q, k, v, mask, self.chunk if length > 1 else 0, causal=causal)
        return self.o_proj(out.reshape(batch, length, self.num_heads * self.head_dim)), new_cache


class MLP(nnx.Module):
    """SwiGLU: W_down (silu(W_gate x) ⊙ W_up x)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.gate_proj = Dense(cfg.dim, cfg.mlp_dim, spec=IN_PROJ_SPEC, bias=False, cfg=cfg, rngs=rngs)
        self.up_proj = Dense(cfg.dim, cfg.mlp_dim, spec=IN_PROJ_SPEC, bias=False, cfg=cfg, rngs=rngs)
        self.down_proj = Dense(cfg.mlp_dim, cfg.dim, spec=OUT_PROJ_SPEC, bias=False, cfg=cfg, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm block: h = x + Attn(RMSNorm(x)); y = h + MLP(RMSNorm(h))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg.dim, cfg=cfg)
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.dim, cfg=cfg)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, rope, mask, cache=None, cache_index=None):
        attn_out, cache = self.attn(self.input_norm(x), rope, mask, cache, cache_index)
        h = x + attn_out
        return h + self.mlp(self.post_attn_norm(h)), cache


def _remat_block(block: Block, x, rope, mask):
    return block(x, rope, mask)[0]


class Embed(nnx.Module):
    """Token embedding table W_emb [V, D]."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.dim), jnp.float32) * cfg.init_std
        self.embedding = _param(init.astype(cfg.param_dtype), EMBED_SPEC)
        self.dtype = cfg.dtype

    def __call__(self, tokens: Array) -> Array:
        return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)


def causal_mask(length: int, key_valid: Array | None = None) -> Array:
    """[1 or B, T, T] bool: query t sees keys s <= t (and only valid keys)."""
    mask = jnp.tril(jnp.ones((length, length), bool))[None]
    if key_valid is not None:
        mask = mask & key_valid[:, None, :].astype(bool)
    return mask


class Transformer(nnx.Module):
    """Decoder-only LM: `model(tokens [B, T]) -> logits [B, T, V]` (float32).

    logits[b, t] predicts tokens[b, t + 1]. Pieces for finer use:
    `hidden(tokens)` -> final-normed hidden states [B, T, D] (compute
    dtype), `logits(h)`, `values(h)` (needs `cfg.value_head`), and
    `output_weight()` -> W_out [D, V].
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.inv_freq = tuple(float(f) for f in rope_frequencies(cfg))
        self.embed = Embed(cfg, rngs=rngs)
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.dim, cfg=cfg)
        self.lm_head = (
            None if cfg.tie_embeddings
            else Dense(cfg.dim, cfg.vocab_size, spec=IN_PROJ_SPEC, bias=False, cfg=cfg, rngs=rngs)
        )
        if cfg.value_head:
            self.value_head = _ValueHead(cfg)
        else:
            self.value_head = None

    def __call__(self, tokens: Array, positions: Array | None = None, *,
                 attention_mask: Array | None = None) -> Array:
        """tokens [B, T] int -> logits [B, T, V] float32.

        `positions` [B, T] default to 0..T−1; `attention_mask` [B, T]
        marks valid (non-padding) tokens for left-padded input (right
        padding needs no mask: causal attention never looks ahead).
        """
        return self.logits(self.hidden(tokens, positions, attention_mask=attention_mask))

    def logits_and_values(self, tokens: Array, positions: Array | None = None, *,
                          attention_mask: Array | None = None) -> tuple[Array, Array]:
        """(logits [B, T, V], values [B, T]), both float32, from one forward.
        values[b, t] = V(tokens[b, :t+1]), the value after reading token t
        (`token_stats(..., values=True)` shifts it to the Rollout rule)."""
        h = self.hidden(tokens, positions, attention_mask=attention_mask)
        return self.logits(h), self.values(h)

    def hidden(self, tokens: Array, positions: Array | None = None, *,
               attention_mask: Array | None = None) -> Array:
        """Final-normed hidden states [B, T, D] (compute dtype)."""
        batch, length = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        mask = causal_mask(length, attention_mask)
        rope = rope_angles(positions, np.asarray(self.inv_freq, np.float32))
        x = self.embed(tokens)
        for block in self.layers:
            if self.cfg.remat:
                x = nnx.remat(_remat_block)(block, x, rope, mask)
            else:
                x, _ = block(x, rope, mask)
        return self.norm(x)

    def forward_cached(
        self,
        tokens: Array,
        positions: Array,
        mask: Array,
        cache: list[KVCache],
        cache_index: Array | int,
    ) -> tuple[Array, list[KVCache]]:
        """Forward with a KV cache: tokens [B, T] written at cache slots
        cache_index .. cache_index+T−1; mask [B, T, T] (prefill) or [B, T, S]
        (decode, attending over the cache). Returns (final-normed hidden
        [B, T, D], updated cache)."""
        x = self.embed(tokens)
        rope = rope_angles(positions, np.asarray(self.inv_freq, np.float32))
        new_cache = []
        for block, layer_cache in zip(self.layers, cache):
            x, layer_cache = block(x, rope, mask, layer_cache, cache_index)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def init_cache(self, batch: int, length: int) -> list[KVCache]:
        """Zero KV cache for `length` slots, in the compute dtype."""
        cfg = self.cfg
        keys = (batch, cfg.num_kv_heads, length, cfg.head_dim)
        values = (batch, cfg.num_kv_heads, cfg.head_dim, length)
        return [(jnp.zeros(keys, cfg.dtype), jnp.zeros(values, cfg.dtype)) for _ in range(cfg.num_layers)]

    def extend_cache(self, cache: list[KVCache], length: int) -> list[KVCache]:
        """The cache with empty slots appended up to `length` slots in all."""
        def grow(x: Array, slot_axis: int) -> Array:
            pad = [(0, 0)] * x.ndim
            pad[slot_axis] = (0, length - x.shape[slot_axis])
            return jnp.pad(x, pad)
        return [(grow(keys, 2), grow(values, 3)) for keys, values in cache]

    def output_weight(self) -> Array:
        """W_out [D, V] (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed.embedding[...].T
        return self.lm_head.kernel[...]

    def logits(self, h: Array) -> Array:
        """Hidden states [..., D] -> logits [..., V] in float32 (float32 accumulation)."""
        w = self.output_weight().astype(self.cfg.dtype)
        return jnp.dot(h.astype(self.cfg.dtype), w, preferred_element_type=jnp.float32)

    def values(self, h: Array) -> Array:
        """Hidden states [..., D] -> scalar values [...] in float32 (needs cfg.value_head)."""
        if self.value_head is None:
            raise ValueError("this model has no value head; build it with ModelConfig(value_head=True)")
        return self.value_head(h)


class _ValueHead(nnx.Module):
    """V(h) = h · w + b, float32; w and b start at 0 so initial values are 0."""

    def __init__(self, cfg: ModelConfig):
        self.kernel = _param(jnp.zeros((cfg.dim, 1), jnp.float32), VALUE_SPEC)
        self.bias = _param(jnp.zeros((1,), jnp.float32), (None,))

    def __call__(self, h: Array) -> Array:
        v = jnp.dot(h.astype(jnp.float32), self.kernel[...], preferred_element_type=jnp.float32)
        return (v + _along_last_axis(self.bias[...], v.ndim))[..., 0]


# --------------------------------------------------------------------------
# Construction and sharding
# --------------------------------------------------------------------------

def param_shardings(model_or_state: Any, mesh: jax.sharding.Mesh) -> Any:
    """NamedShardings for the parameters, from their partition annotations.

    Accepts a module or an `nnx.State` (e.g. the state half of
    `nnx.split(model)`, concrete or abstract) and returns the same tree with
    a `NamedSharding` in place of each array. A mesh axis that does not
    divide its dimension is dropped (that dimension is replicated), so any
    preset fits any mesh.
    """
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)

    def one(variable):
        if not isinstance(variable, nnx.Variable):
            return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        spec = variable.get_metadata().get("out_sharding") or ()
        shape = variable.get_value().shape
        return variable.replace(jax.sharding.NamedSharding(mesh, fit_spec(spec, shape, mesh)))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def partition_specs(model_or_state: Any) -> Any:
    """The raw PartitionSpec annotation of every parameter (same tree as the state)."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    return nnx.get_partition_spec(state)


def create_model(cfg: ModelConfig, *, seed: int = 0, mesh: jax.sharding.Mesh | None = None) -> Transformer:
    """A randomly initialised Transformer; with a mesh, parameters are created
    directly in their shardings (never materialised whole on one device)."""
    if mesh is None:
        return Transformer(cfg, rngs=nnx.Rngs(seed))
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(seed)))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = param_shardings(abstract_state, mesh)

    @functools.partial(jax.jit, out_shardings=shardings)
    def init():
        return nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed)))

    return nnx.merge(graphdef, init())


def shard_model(model: Transformer, mesh: jax.sharding.Mesh) -> Transformer:
    """Move a model's parameters onto `mesh` by their annotations (in place; returns the model)."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, param_shardings(state, mesh)))
    return model
