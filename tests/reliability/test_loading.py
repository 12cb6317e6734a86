"""Damaged inputs are refused up front with one line naming the problem and
the fix (the CLI prints ValueError / FileNotFoundError messages as one line):
HF checkpoints (config.json, safetensors headers and data, tokenizer files,
non-finite weights) and prepared gsm8k shards."""

import json
import os
import pathlib
import shutil
import struct

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from rlzoo import cli
from rlzoo.policy import PRESETS, CheckpointError, Transformer, load_hf, save_hf
from rlzoo.policy.safetensors_io import read_safetensors_header, write_safetensors
from rlzoo.sharding import make_mesh
from rlzoo.tasks import get_task
from rlzoo.train.setup import load_policy

GSM8K_DIR = pathlib.Path(__file__).parent.parent / "fixtures" / "gsm8k"
TRAIN_SHARD = "gsm8k/1.0.0/gsm8k-train.array_record-00000-of-00001"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A tiny HF checkpoint directory (config.json + model.safetensors, no tokenizer files)."""
    cfg = PRESETS["tiny"].replace(vocab_size=96, num_layers=1)
    path = tmp_path_factory.mktemp("hf")
    save_hf(Transformer(cfg, rngs=nnx.Rngs(0)), cfg, path)
    return path


@pytest.fixture
def checkpoint(saved_checkpoint, tmp_path):
    """A copy of the tiny checkpoint that the test may damage."""
    return pathlib.Path(shutil.copytree(saved_checkpoint, tmp_path / "hf"))


def test_config_without_required_keys(checkpoint):
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    del config["hidden_size"], config["num_hidden_layers"]
    config["vocab_size"] = None  # as good as missing
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as e:
        load_hf(checkpoint)
    message = one_line(e.value)
    assert str(config_path) in message
    assert all(key in message for key in ("hidden_size", "num_hidden_layers", "vocab_size"))
    assert "intermediate_size" not in message


@pytest.mark.parametrize("header", [
    struct.pack("<Q", 2**40) + b"{}",  # header length far beyond the file
    struct.pack("<Q", 8) + b"\x00garbage",  # in bounds, but not JSON
    struct.pack("<Q", 8) + b"[1, 2]  ",  # JSON, but not a header object
], ids=["length", "json", "object"])
def test_damaged_safetensors_header(checkpoint, header):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(header + b"\x00" * 64)
    with pytest.raises(CheckpointError) as e:
        load_hf(checkpoint)
    message = one_line(e.value)
    assert str(weights) in message and "not a safetensors file" in message and "re-download" in message


def test_truncated_safetensors(checkpoint):
    weights = checkpoint / "model.safetensors"
    header, start = read_safetensors_header(str(weights))
    name = max(header, key=lambda n: header[n]["data_offsets"][1])
    begin, end = header[name]["data_offsets"]
    os.truncate(weights, start + (begin + end) // 2)  # cut in the middle of the last tensor
    with pytest.raises(CheckpointError) as e:
        load_hf(checkpoint)
    message = one_line(e.value)
    assert str(weights) in message and repr(name) in message
    assert "truncated" in message and "re-download" in message


def test_safetensors_offsets_that_disagree_with_shape_and_dtype(checkpoint):
    weights = checkpoint / "model.safetensors"
    header, start = read_safetensors_header(str(weights))
    data = weights.read_bytes()[start:]
    name = "model.norm.weight"
    header[name]["dtype"] = "F16"  # the shape config.json implies, but half the bytes its offsets span
    blob = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    with pytest.raises(CheckpointError) as e:
        load_hf(checkpoint)
    message = one_line(e.value)
    assert str(weights) in message and repr(name) in message and "re-download" in message


def test_checkpoint_without_tokenizer_files(checkpoint):
    with pytest.raises(FileNotFoundError) as e:
        load_policy(str(checkpoint), seed=0, mesh=None)
    message = one_line(e.value)
    assert str(checkpoint) in message and "tokenizer.json" in message and "tokenizer_config.json" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("sharded", [False, True], ids=["one-device", "mesh"])
def test_non_finite_weights(checkpoint, bad, sharded):
    if sharded and jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    weights = checkpoint / "model.safetensors"
    tensors = load_file(str(weights))
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name][3, 5] = bad
    tensors["model.norm.weight"][0] = bad  # loaded later: the first bad tensor is the one named
    write_safetensors(str(weights), tensors)
    with pytest.raises(CheckpointError) as e:
        load_hf(checkpoint, mesh=make_mesh(data=4, tensor=2) if sharded else None)
    message = one_line(e.value)
    assert str(checkpoint) in message and repr(name) in message and "NaN or inf" in message
    assert "model.norm.weight" not in message


def truncated_gsm8k(tmp_path, keep="half"):
    """A copy of the gsm8k fixture whose train shard is cut short; returns (data_dir, shard)."""
    data = pathlib.Path(shutil.copytree(GSM8K_DIR, tmp_path / "data"))
    shard = data / TRAIN_SHARD
    size = shard.stat().st_size
    # Half keeps the records' 64 KiB block but drops the index, which once read as records of "None".
    os.truncate(shard, {"half": size // 2, "head": 1000, "tail": size - 100}[keep])
    return data, shard


@pytest.mark.parametrize("keep", ["half", "head", "tail"])
def test_truncated_gsm8k_shard(tmp_path, keep):
    data, shard = truncated_gsm8k(tmp_path, keep)
    with pytest.raises(ValueError) as e:
        get_task("gsm8k", data_dir=data)
    message = one_line(e.value)
    assert str(shard) in message and "truncated" in message and "prepare_gsm8k" in message


def test_corrupt_gsm8k_record(tmp_path):
    data = pathlib.Path(shutil.copytree(GSM8K_DIR, tmp_path / "data"))
    shard = data / TRAIN_SHARD
    raw = bytearray(shard.read_bytes())
    raw[200:220] = bytes(20)  # inside the first record chunk; the index at the end stays intact
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as e:
        get_task("gsm8k", data_dir=data)
    message = one_line(e.value)
    assert str(shard) in message and "corrupt" in message and "prepare_gsm8k" in message


@pytest.mark.parametrize("damaged", ["model", "data"])
def test_cli_refuses_damaged_inputs_in_one_line(checkpoint, tmp_path, capsys, damaged):
    if damaged == "model":  # the tiny checkpoint has no tokenizer files
        argv, expected = ["--model", str(checkpoint)], "has no tokenizer files"
    else:
        data, shard = truncated_gsm8k(tmp_path)
        argv, expected = ["--task", "gsm8k", "--data-dir", str(data)], f"shard {shard} is truncated"
    assert cli.main(["train", *argv, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
