"""Multi-host training: two processes joined by `jax.distributed.initialize`
on localhost (2 CPU devices each, one data x fsdp mesh over all 4) train
exactly like one process with 4 devices."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

from rlzoo.metrics import read_metrics

TRAIN = "import sys; from rlzoo.cli import main; sys.exit(main(sys.argv[1:]))"
ARGS = [
    "train", "--algo", "grpo", "--entropy-coef", "0.01",  # a gradient even when every reward is 0
    "--sft-steps", "2", "--sft-batch", "8", "--steps", "2", "--prompts-per-step", "2",
    "--samples-per-prompt", "4", "--max-new-tokens", "4", "--eval-size", "4", "--eval-every", "2",
    "--checkpoint-every", "1", "--mesh-data", "2", "--mesh-fsdp", "2",
    "--progress", "false", "--tensorboard", "false",
]
UNTIMED = ("time_sample_s", "time_forwards_s", "time_update_s", "tokens_per_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(devices: int, run_dir, cache_dir, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
        f"--xla_force_host_platform_device_count={devices} --xla_llvm_disable_expensive_passes=true"
    ))
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, *ARGS, "--run-dir", str(run_dir), "--cache-dir", str(cache_dir), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out[-3000:]
    return out


def test_two_processes_train_like_one(tmp_path):
    coordinator = f"localhost:{free_port()}"
    workers = [
        launch(2, tmp_path / "multi", tmp_path / "multi-cache", "--coordinator-address", coordinator,
               "--num-processes", "2", "--process-id", str(i))
        for i in range(2)
    ]
    outputs = [finish(w) for w in workers]
    finish(launch(4, tmp_path / "single", tmp_path / "single-cache"))

    assert '"final_accuracy"' in outputs[0] and '"final_accuracy"' not in outputs[1], "only process 0 reports"
    assert sorted(os.listdir(tmp_path / "multi" / "checkpoints")) == ["1", "2"]
    multi = read_metrics(tmp_path / "multi" / "metrics.jsonl")
    single = read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in multi] == [r["step"] for r in single] == [0, 1, 2]
    assert all(r["grad_norm"] > 0 for r in multi[1:]), "the comparison needs a non-zero update"
    for a, b in zip(multi, single):
        assert a.keys() == b.keys()
        for key in a.keys() - set(UNTIMED):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=f"step {a['step']}: {key}")
