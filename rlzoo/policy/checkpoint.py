"""Hugging Face checkpoints in and out (GGUF import is in `gguf.py`).

`load_hf(path)` reads a local directory with `config.json` and
`*.safetensors` (one file, or shards with `model.safetensors.index.json`)
for `LlamaForCausalLM`, `Qwen2ForCausalLM` and `Qwen3ForCausalLM`. Tensors
are memory-mapped and each device receives only its own slice
(`jax.make_array_from_callback` with the parameter's NamedSharding), so a
model never has to fit whole on one device or be initialised randomly
first. `save_hf(model, cfg, path)` writes the same format back (a value
head, which HF models lack, goes to a separate `value_head.safetensors`).

Weight layout: HF stores linear weights as [out, in]; this model as
[in, out], so matrices are transposed on the way in and out.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlzoo.policy.model import ModelConfig, RopeScaling, Transformer, param_shardings
from rlzoo.policy.safetensors_io import CheckpointError, TensorIndex, write_safetensors

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# The config.json keys config_from_hf has no default for.
REQUIRED_HF_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
VALUE_HEAD_FILE = "value_head.safetensors"


# --------------------------------------------------------------------------
# Config translation
# --------------------------------------------------------------------------

def architecture_of(hf: dict) -> str:
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else _MODEL_TYPES.get(hf.get("model_type", ""), hf.get("model_type"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {arch!r} (model_type {hf.get('model_type')!r}); "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return arch


def config_from_hf(hf: dict, *, dtype: str = "float32", param_dtype: str | None = None,
                   value_head: bool = False, source: str = "config.json") -> ModelConfig:
    """ModelConfig from a HF `config.json` dict (read from `source`, named in
    errors); raises CheckpointError for missing required keys and for
    features this model does not implement."""
    arch = architecture_of(hf)
    missing = [key for key in REQUIRED_HF_KEYS if hf.get(key) is None]
    if missing:
        raise CheckpointError(
            f"{source} lacks required key(s) {', '.join(missing)} for a {arch}: it is incomplete or "
            f"damaged; copy config.json from the model's Hugging Face repository"
        )

    def unsupported(what):
        raise CheckpointError(f"{arch}: {what} is not supported")

    if hf.get("hidden_act", "silu") != "silu":
        unsupported(f"hidden_act={hf['hidden_act']!r}")
    if hf.get("mlp_bias"):
        unsupported("mlp_bias=true")
    if hf.get("use_sliding_window"):
        unsupported("use_sliding_window=true")
    attention_bias = bool(hf.get("attention_bias", False))
    if attention_bias and arch != "Qwen2ForCausalLM":
        unsupported("attention_bias=true (it adds an output-projection bias)")
    rope = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    rope = {**legacy, **rope}
    theta = hf.get("rope_theta", rope.get("rope_theta", 10_000.0))
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        unsupported("partial_rotary_factor != 1")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        scaling = RopeScaling(
            float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"]),
            int(rope["original_max_position_embeddings"]),
        )
    elif rope_type not in (None, "default"):
        unsupported(f"rope_type={rope_type!r}")
    heads = int(hf["num_attention_heads"])
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]),
        dim=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        mlp_dim=int(hf["intermediate_size"]),
        rope_theta=float(theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=arch == "Qwen2ForCausalLM",
        qk_norm=arch == "Qwen3ForCausalLM",
        param_dtype=param_dtype or dtype,
        dtype=dtype,
        value_head=value_head,
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        rope_scaling=scaling,
    )


def config_to_hf(cfg: ModelConfig, *, torch_dtype: str | None = None) -> dict:
    """A HF `config.json` dict for `cfg`: Qwen3 when it has q/k norm, Qwen2
    when it has qkv biases, Llama otherwise."""
    if cfg.qk_norm and cfg.qkv_bias:
        raise CheckpointError("no HF architecture has both q/k norm and qkv-only biases")
    arch = "Qwen3ForCausalLM" if cfg.qk_norm else "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
    model_type = {v: k for k, v in _MODEL_TYPES.items()}[arch]
    rope: dict[str, Any] = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    hf = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len,
        "torch_dtype": torch_dtype or cfg.param_dtype,
    }
    if cfg.rope_scaling is not None:
        hf["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if arch == "LlamaForCausalLM":
        hf.update(attention_bias=False, mlp_bias=False)
    elif arch == "Qwen3ForCausalLM":
        hf.update(attention_bias=False, use_sliding_window=False, sliding_window=None)
    else:
        hf.update(use_sliding_window=False, sliding_window=None)
    return hf


# --------------------------------------------------------------------------
# Parameter names
# --------------------------------------------------------------------------

def _path_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def hf_name_map(cfg: ModelConfig) -> dict[str, tuple[str, bool]]:
    """This model's parameter paths -> (HF tensor name, transposed?)."""
    names: dict[str, tuple[str, bool]] = {
        "embed.embedding": ("model.embed_tokens.weight", False),
        "norm.scale": ("model.norm.weight", False),
    }
    if not cfg.tie_embeddings:
        names["lm_head.kernel"] = ("lm_head.weight", True)
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        names[f"{ours}.input_norm.scale"] = (f"{theirs}.input_layernorm.weight", False)
        names[f"{ours}.post_attn_norm.scale"] = (f"{theirs}.post_attention_layernorm.weight", False)
        for proj in ("q", "k", "v", "o"):
            names[f"{ours}.attn.{proj}_proj.kernel"] = (f"{theirs}.self_attn.{proj}_proj.weight", True)
        if cfg.qkv_bias:
            for proj in ("q", "k", "v"):
                names[f"{ours}.attn.{proj}_proj.bias"] = (f"{theirs}.self_attn.{proj}_proj.bias", False)
        if cfg.qk_norm:
            names[f"{ours}.attn.q_norm.scale"] = (f"{theirs}.self_attn.q_norm.weight", False)
            names[f"{ours}.attn.k_norm.scale"] = (f"{theirs}.self_attn.k_norm.weight", False)
        for proj in ("gate", "up", "down"):
            names[f"{ours}.mlp.{proj}_proj.kernel"] = (f"{theirs}.mlp.{proj}_proj.weight", True)
    return names


_VALUE_NAMES = {"value_head.kernel": ("value_head.weight", True), "value_head.bias": ("value_head.bias", False)}


def _checkpoint_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {missing}")
        return [os.path.join(path, f) for f in files]
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors") and f != VALUE_HEAD_FILE)
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    return [os.path.join(path, f) for f in files]


# --------------------------------------------------------------------------
# Building a model from named arrays
# --------------------------------------------------------------------------

def build_model(
    cfg: ModelConfig,
    fetch: Callable[[str, tuple[int, ...]], Any],
    mesh: jax.sharding.Mesh | None,
    *,
    source: str,
    tensor_names: Mapping[str, str],
) -> Transformer:
    """A Transformer whose parameters come from `fetch(path, expected shape)`,
    which returns a numpy-indexable array of that shape (a lazy view is
    fine); each parameter is placed straight into its sharding.

    Every loader goes through here, so this is where non-finite weights are
    refused: a CheckpointError names `source` and the first parameter's
    `tensor_names[path]` (its name in the file) holding NaN or inf."""
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shardings = param_shardings(state, mesh) if mesh is not None else None

    def load(path, variable, sharding=None):
        name = _path_name(path)
        abstract_value = variable.get_value()
        array = fetch(name, tuple(abstract_value.shape))
        dtype = abstract_value.dtype

        def host_value(index=()):
            # Checked on the slice this device receives (a host reads only its own part), and after
            # the cast, which can itself overflow to inf.
            value = np.asarray(array[index]).astype(dtype)
            if jnp.issubdtype(dtype, jnp.inexact) and not np.isfinite(value).all():
                raise CheckpointError(
                    f"{source}: tensor {tensor_names.get(name, name)!r} holds NaN or inf values; the "
                    f"checkpoint is damaged or was saved from a diverged run: re-download it or use an earlier one"
                )
            return value

        if sharding is None:
            value = jnp.asarray(host_value())
        else:
            sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
            value = jax.make_array_from_callback(abstract_value.shape, sharding, host_value)
        return variable.replace(value)

    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    if shardings is None:
        state = jax.tree_util.tree_map_with_path(load, state, is_leaf=is_var)
    else:
        state = jax.tree_util.tree_map_with_path(load, state, shardings, is_leaf=is_var)
    return nnx.merge(graphdef, state)


def _transposed(array) -> Any:
    """A lazy [in, out] view of an [out, in] array (memmaps stay unread)."""
    return array.T


def load_hf(
    path: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype: str = "float32",
    param_dtype: str | None = None,
    value_head: bool | None = None,
) -> tuple[Transformer, ModelConfig]:
    """Load a local HF Llama / Qwen2 / Qwen3 checkpoint directory.

    `dtype` is the compute dtype and, unless `param_dtype` is given, the
    parameter dtype. With `mesh`, every parameter is created directly in its
    NamedSharding. `value_head`: None = load one if the directory has
    `value_head.safetensors`; True = also create a zero one when absent.
    Raises FileNotFoundError for missing files and CheckpointError for an
    unsupported architecture, a config.json without a required key, a
    damaged or truncated safetensors file, a missing / unexpected tensor, a
    shape that does not match config.json or a tensor holding NaN or inf.
    """
    path = os.fspath(path)
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} does not exist: a HF checkpoint directory needs config.json")
    with open(config_path) as f:
        hf = json.load(f)
    value_file = os.path.join(path, VALUE_HEAD_FILE)
    has_value = os.path.exists(value_file)
    cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype, source=config_path,
                         value_head=has_value if value_head is None else bool(value_head or has_value))
    index = TensorIndex(_checkpoint_files(path))
    values = TensorIndex([value_file]) if has_value else None
    names = hf_name_map(cfg)
    arch = architecture_of(hf)

    def fetch(name: str, shape: tuple[int, ...]):
        if name in _VALUE_NAMES:
            if values is None:
                return np.zeros(shape, np.float32)
            source, (hf_name, transpose) = values, _VALUE_NAMES[name]
        else:
            source, (hf_name, transpose) = index, names[name]
        if hf_name not in source.entries:
            raise CheckpointError(
                f"{path}: tensor {hf_name!r} is missing ({arch}, {cfg.num_layers} layers per config.json)"
            )
        expected = shape[::-1] if transpose else shape
        if source.shape(hf_name) != expected:
            raise CheckpointError(
                f"{path}: tensor {hf_name!r} has shape {source.shape(hf_name)}, but config.json "
                f"implies {expected}"
            )
        array = source.array(hf_name)
        return _transposed(array) if transpose else array

    wanted = {hf_name for hf_name, _ in names.values()}
    unexpected = sorted(
        n for n in index.entries
        if n not in wanted and not n.endswith(_IGNORED_SUFFIXES)
        and not (n == "lm_head.weight" and cfg.tie_embeddings)
    )
    if unexpected:
        raise CheckpointError(
            f"{path}: {len(unexpected)} tensor(s) that a {arch} with this config.json does not "
            f"have, e.g. {unexpected[:5]} (wrong num_hidden_layers or architecture?)"
        )
    tensor_names = {ours: theirs for ours, (theirs, _) in {**names, **_VALUE_NAMES}.items()}
    return build_model(cfg, fetch, mesh, source=path, tensor_names=tensor_names), cfg


def _named_arrays(model: Transformer) -> dict[str, np.ndarray]:
    state = nnx.state(model)
    out = {}

    def grab(path, variable):
        out[_path_name(path)] = np.asarray(jax.device_get(variable.get_value()))
        return variable

    jax.tree_util.tree_map_with_path(grab, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return out


def save_hf(
    model: Transformer,
    cfg: ModelConfig | None,
    path: str | os.PathLike,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Write `config.json` and `model.safetensors` (or shards plus
    `model.safetensors.index.json` above `max_shard_bytes`) in HF layout,
    loadable by `transformers` and by `load_hf`. `dtype` defaults to the
    parameter dtype. A value head goes to `value_head.safetensors`."""
    cfg = model.cfg if cfg is None else cfg
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    dtype = jnp.dtype(dtype or cfg.param_dtype)
    arrays = _named_arrays(model)
    tensors: dict[str, np.ndarray] = {}
    for ours, (theirs, transpose) in hf_name_map(cfg).items():
        value = arrays[ours]
        tensors[theirs] = (value.T if transpose else value).astype(dtype)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in tensors.items():
        if shards[-1] and size + value.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = value
        size += value.nbytes
    if len(shards) == 1:
        write_safetensors(os.path.join(path, "model.safetensors"), shards[0])
        stale = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(stale):
            os.remove(stale)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(os.path.join(path, file), shard)
            weight_map.update({name: file for name in shard})
        total = sum(v.nbytes for v in tensors.values())
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if cfg.value_head:
        write_safetensors(os.path.join(path, VALUE_HEAD_FILE), {
            theirs: (arrays[ours].T if transpose else arrays[ours]).astype(np.float32)
            for ours, (theirs, transpose) in _VALUE_NAMES.items()
        })
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_to_hf(cfg, torch_dtype=dtype.name), f, indent=2)
