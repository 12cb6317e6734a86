"""The policy: a Flax NNX Llama / Qwen2 / Qwen3 decoder, its presets,
chunked token statistics, and Hugging Face / GGUF checkpoint I/O.

    model = Transformer(PRESETS["tiny"], rngs=nnx.Rngs(0))
    logits = model(tokens)                       # [B, T, V] float32
    stats = token_stats(model, rollout.tokens)   # PolicyStats, chunked over T
    model, cfg = load_hf("/path/to/Qwen2.5-0.5B", mesh=make_mesh())
    model, cfg, tokenizer = load_smollm2()
"""

from rlzoo.policy.checkpoint import config_from_hf, config_to_hf, load_hf, save_hf
from rlzoo.policy.safetensors_io import CheckpointError
from rlzoo.policy.gguf import load_gguf, load_smollm2
from rlzoo.policy.model import (
    PRESETS,
    ModelConfig,
    RopeScaling,
    Transformer,
    create_model,
    param_shardings,
    partition_specs,
    shard_model,
)
from rlzoo.policy.stats import chunked_head_stats, plain_token_stats, token_stats

__all__ = [
    "CheckpointError", "ModelConfig", "PRESETS", "RopeScaling", "Transformer", "chunked_head_stats",
    "config_from_hf", "config_to_hf", "create_model", "load_gguf", "load_hf", "load_smollm2",
    "param_shardings", "partition_specs", "plain_token_stats", "save_hf", "shard_model", "token_stats",
]
