"""Fault injection on the tiny model, each run in its own process: SIGINT and
SIGKILL in every phase of a step, then --resume; a damaged newest
checkpoint; a NaN in the loss.

What must hold (the README's "Reliability" section):
* a resumed run ends with parameters bit-identical to an uninterrupted run;
* no completed checkpoint is lost, and the saved step equals the updates applied;
* Ctrl-C prints one line, no traceback, and exits 130;
* a non-finite update stops the run with exit 1 and the newest checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlzoo.checkpoint import damage

pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")

DRIVER = pathlib.Path(__file__).with_name("fault_driver.py")
STEPS = 3
AT = 1  # the fault strikes during the second step (index 1)
RUN = [
    "--steps", str(STEPS), "--sft-steps", "0", "--prompts-per-step", "2", "--samples-per-prompt", "2",
    "--max-new-tokens", "4", "--eval-size", "4", "--eval-every", "1", "--checkpoint-every", "1",
    "--tensorboard", "false", "--progress", "false",
]


def train(run_dir, phase="none", signal_name="SIGINT", *extra) -> subprocess.CompletedProcess:
    # One device, and every compilation cached: a run then takes seconds, not half a minute.
    env = {
        **os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_llvm_disable_expensive_passes=true",
        "JAX_COMPILATION_CACHE_DIR": str(pytest_cache_dir()), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    return subprocess.run(
        [sys.executable, str(DRIVER), phase, signal_name, str(AT), "--", *RUN, "--run-dir", str(run_dir), *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )


def pytest_cache_dir() -> pathlib.Path:
    return pathlib.Path(jax.config.jax_compilation_cache_dir or pathlib.Path(__file__).parents[2] / ".jax_cache")


def steps_on_disk(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (pathlib.Path(run_dir) / "checkpoints").iterdir() if p.name.isdigit())


def saved_params(run_dir, step: int) -> list[np.ndarray]:
    state = ocp.PyTreeCheckpointer().restore(str(pathlib.Path(run_dir) / "checkpoints" / str(step) / "state"))
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def metric_steps(run_dir) -> list[int]:
    lines = (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    done = train(run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir


# (phase, the step saved by the interrupt: sampling has applied AT updates;
# from the update on, the step's update is applied and counted).
SIGINT_CASES = [("sampling", AT), ("update", AT + 1), ("evaluation", AT + 1), ("checkpoint", AT + 1)]


@pytest.mark.parametrize("phase, saved", SIGINT_CASES)
def test_sigint_saves_the_applied_updates_and_resumes_exactly(tmp_path, uninterrupted, phase, saved):
    run_dir = tmp_path / "run"
    stopped = train(run_dir, phase, "SIGINT")
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr and "Segmentation" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"rlzoo train: interrupted: saved step {saved} in {run_dir}; continue with --resume"
    )
    assert steps_on_disk(run_dir)[-1] == saved
    assert damage(run_dir / "checkpoints" / str(saved)) is None
    assert metric_steps(run_dir)[-1] == saved, "the metrics record of every applied step is written"
    resumed = train(run_dir, "none", "SIGINT", "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_steps(run_dir) == list(range(STEPS + 1))
    assert_identical(saved_params(run_dir, STEPS), saved_params(uninterrupted, STEPS))


@pytest.mark.parametrize("phase", ["sampling", "update", "evaluation", "checkpoint"])
def test_sigkill_loses_no_completed_checkpoint_and_resumes_exactly(tmp_path, uninterrupted, phase):
    run_dir = tmp_path / "run"
    killed = train(run_dir, phase, "SIGKILL")
    assert killed.returncode == -9
    kept = steps_on_disk(run_dir)
    assert AT in kept, "the checkpoint completed before the kill is still there"
    assert damage(run_dir / "checkpoints" / str(AT)) is None
    resumed = train(run_dir, "none", "SIGINT", "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr
    if phase == "checkpoint":  # killed between orbax's commit and the manifest: not a checkpoint
        assert f"checkpoint step {AT + 1} is damaged: no manifest" in resumed.stdout
    assert metric_steps(run_dir) == list(range(STEPS + 1)), "a cut-off or redone record is repaired"
    assert_identical(saved_params(run_dir, STEPS), saved_params(uninterrupted, STEPS))


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    newest = run_dir / "checkpoints" / str(STEPS)
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != "MANIFEST.json"),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward_me')  # and a record cut off mid-write
    resumed = train(run_dir, "none", "SIGINT", "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoint step {STEPS} is damaged: {victim.relative_to(newest)} has" in resumed.stdout
    assert (run_dir / "checkpoints.damaged").is_dir(), "the damaged step is kept aside, not deleted"
    assert metric_steps(run_dir) == list(range(STEPS + 1))
    assert_identical(saved_params(run_dir, STEPS), saved_params(uninterrupted, STEPS))


def test_a_nan_loss_stops_the_run_with_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    stopped = train(run_dir, "nan")
    assert stopped.returncode == 1, stopped.stderr
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith(f"rlzoo train: stopped: step {AT + 1}: non-finite loss") and "Traceback" not in stopped.stderr
    assert f"newest checkpoint (step {AT}) is intact" in message
    assert steps_on_disk(run_dir) == [AT] and damage(run_dir / "checkpoints" / str(AT)) is None
    assert all(np.isfinite(x).all() for x in saved_params(run_dir, AT) if np.issubdtype(x.dtype, np.floating))
    assert metric_steps(run_dir) == list(range(AT + 1)), "nothing of the bad step is written"
    skipping = train(tmp_path / "skip", "nan", "SIGINT", "--skip-nonfinite-steps", "1")
    assert skipping.returncode == 0, skipping.stderr
    assert f"step {AT + 1}: skipped a non-finite update" in skipping.stdout
