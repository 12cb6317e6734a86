"""The NNX decoder against transformers' PyTorch Llama / Qwen2 / Qwen3 on the
same random tiny checkpoints, and checkpoint import / export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlzoo.policy import (
    PRESETS, CheckpointError, ModelConfig, Transformer, load_hf, partition_specs, save_hf,
)
from rlzoo.policy.safetensors_io import write_safetensors
from rlzoo.policy.model import causal_mask

VOCAB = 80


def forward(model, tokens):
    """Jitted logits (one compilation instead of one per primitive)."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, jnp.asarray(tokens))


TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 24))


def _hf_cases():
    from transformers import (
        LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM,
    )

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
    return {
        # Llama 3 RoPE rescaling, positions beyond its original context of 8.
        "llama": LlamaForCausalLM(LlamaConfig(
            **common, rope_theta=500.0, rms_norm_eps=1e-5,
            rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8})),
        # qkv biases, tied embeddings.
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1e4)),
        # q/k norm, head_dim != hidden / heads.
        "qwen3": Qwen3ForCausalLM(Qwen3Config(**common, head_dim=12, tie_word_embeddings=False)),
    }


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """{name: (directory, reference logits of TOKENS)} from transformers' PyTorch models."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = {}
    torch.manual_seed(0)
    for name, model in _hf_cases().items():
        with torch.no_grad():
            for p in model.parameters():  # norm scales (and biases) around 1, matrices around 0
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
            logits = model(torch.tensor(TOKENS)).logits.numpy()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (str(path), logits)
    return out


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_logits_match_transformers(hf_checkpoints, name):
    path, reference = hf_checkpoints[name]
    model, cfg = load_hf(path)
    expected = {"llama": (False, False), "qwen2": (True, False), "qwen3": (False, True)}[name]
    assert (cfg.qkv_bias, cfg.qk_norm) == expected
    logits = np.asarray(forward(model, TOKENS))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)


def test_export_import_round_trip_is_exact(hf_checkpoints, tmp_path):
    path, _ = hf_checkpoints["qwen3"]
    model, cfg = load_hf(path)
    save_hf(model, cfg, tmp_path / "one")
    # Tiny shard limit -> several shards plus model.safetensors.index.json.
    save_hf(model, cfg, tmp_path / "sharded", max_shard_bytes=4096)
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path / "sharded") if f.endswith(".safetensors")]) > 2
    original = nnx.state(model)
    for where in ("one", "sharded"):
        again, cfg2 = load_hf(tmp_path / where)
        assert cfg2 == cfg
        for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(nnx.state(again))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_loads_in_transformers(hf_checkpoints, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    path, reference = hf_checkpoints["llama"]
    model, cfg = load_hf(path)
    save_hf(model, cfg, tmp_path)
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(tmp_path).eval()(torch.tensor(TOKENS)).logits.numpy()
    np.testing.assert_array_equal(logits, reference)


def test_bfloat16_round_trip_and_value_head(tmp_path, tiny_cfg):
    cfg = tiny_cfg.replace(param_dtype="bfloat16", dtype="bfloat16", value_head=True)
    model = Transformer(cfg, rngs=nnx.Rngs(1))
    model.value_head.kernel[...] = jnp.full((cfg.dim, 1), 0.5)
    save_hf(model, cfg, tmp_path)
    assert json.load(open(tmp_path / "config.json"))["torch_dtype"] == "bfloat16"
    again, cfg2 = load_hf(tmp_path, dtype="bfloat16")
    assert cfg2.value_head and cfg2.param_dtype == "bfloat16"
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(again))):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_clear_errors(hf_checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path / "empty")

    path, _ = hf_checkpoints["llama"]
    config = json.load(open(os.path.join(path, "config.json")))
    bad = tmp_path / "gpt2"
    bad.mkdir()
    json.dump({**config, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, open(bad / "config.json", "w"))
    with pytest.raises(CheckpointError, match="unsupported architecture 'GPT2LMHeadModel'"):
        load_hf(bad)

    model, cfg = load_hf(path)
    save_hf(model, cfg, tmp_path / "wide")
    json.dump({**config, "intermediate_size": 44}, open(tmp_path / "wide" / "config.json", "w"))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight' has shape .*40.*config.json implies .*44"):
        load_hf(tmp_path / "wide")

    json.dump({**config, "num_hidden_layers": 3}, open(tmp_path / "wide" / "config.json", "w"))
    with pytest.raises(CheckpointError, match="model.layers.2.*missing"):
        load_hf(tmp_path / "wide")

    json.dump({**config, "num_hidden_layers": 1}, open(tmp_path / "wide" / "config.json", "w"))
    with pytest.raises(CheckpointError, match="does not have"):
        load_hf(tmp_path / "wide")

    (tmp_path / "noweights").mkdir()
    json.dump(config, open(tmp_path / "noweights" / "config.json", "w"))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_hf(tmp_path / "noweights")


def test_every_parameter_is_annotated(tiny_cfg):
    for cfg in (tiny_cfg.replace(qkv_bias=True, value_head=True), tiny_cfg.replace(qk_norm=True, tie_embeddings=True)):
        model = Transformer(cfg, rngs=nnx.Rngs(0))
        state = nnx.state(model)
        leaves = jax.tree.leaves(state)
        specs = jax.tree.leaves(partition_specs(model), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
        assert len(specs) == len(leaves)
        for value, spec in zip(leaves, specs):
            assert len(spec) == value.ndim
            assert set(spec) <= {None, "fsdp", "tensor"}


def test_presets_have_the_published_sizes():
    # Parameter counts of the released checkpoints.
    assert PRESETS["smollm2-135m"].num_params == 134_515_008
    assert PRESETS["qwen2.5-0.5b"].num_params == 494_032_768
    assert PRESETS["llama-3.2-1b"].num_params == 1_235_814_400
    small = PRESETS["tiny"]
    model = nnx.eval_shape(lambda: Transformer(small, rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model))) == small.num_params


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelConfig(vocab_size=8, dim=8, num_layers=1, num_heads=3, num_kv_heads=2, head_dim=4, mlp_dim=8)
    assert ModelConfig(vocab_size=8, dim=8, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4, mlp_dim=8,
                       param_dtype=jnp.bfloat16).param_dtype == "bfloat16"


def test_safetensors_writer_reads_back_with_safetensors(tmp_path):
    from safetensors.numpy import load_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones((5,), np.float16)}
    write_safetensors(str(tmp_path / "x.safetensors"), arrays)
    back = load_file(str(tmp_path / "x.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])


def test_chunked_attention_and_remat_change_nothing(tiny_cfg):
    """attention_chunk (query blocks under checkpoint) and per-block remat give
    the plain model's logits and gradients."""
    base = tiny_cfg.replace(num_layers=1)
    tokens = jnp.asarray(TOKENS[:, :21] % base.vocab_size)

    def loss_and_grad(cfg):
        graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))

        def loss(state):
            logits = nnx.merge(graphdef, state)(tokens)
            return jnp.sum(jnp.sin(logits)), logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(state)

    (_, plain_logits), plain_grad = loss_and_grad(base)
    (_, logits), grad = loss_and_grad(base.replace(attention_chunk=8, remat=True))
    np.testing.assert_allclose(logits, plain_logits, atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(plain_grad)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("length", [16, 21])
def test_causal_key_blocks_equal_full_attention(monkeypatch, length):
    """Causal attention in query blocks, each against the keys up to its end
    (here blocks of 4), gives full attention's outputs and gradients, with a
    left-padded row. (Its padding queries see no key and average the keys
    they are given, a different set in each form; the model never reads
    those outputs at a real position, so they are left out of the loss.)"""
    import rlzoo.policy.model as model_module

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, length, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, 2, length, 8)), jnp.float32) for _ in range(2))
    valid = np.ones((2, length), bool)
    valid[1, :3] = False
    mask = causal_mask(length, jnp.asarray(valid))

    def run(causal):
        def loss(q, k, v):
            out = model_module.attend(q, k, v, mask, causal=causal)
            return jnp.sum(jnp.sin(out) * jnp.asarray(valid)[:, :, None, None])

        return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

    monkeypatch.setattr(model_module, "CAUSAL_BLOCK", 4)
    full, blocked = run(False), run(True)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(blocked)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(blocked[0])))
