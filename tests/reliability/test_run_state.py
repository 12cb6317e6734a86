"""Run-directory state and the pieces under the fault tests, in process:
checkpoint verification and fallback, retention, metrics repair, the
interrupt guard, non-finite and empty updates, and the checks a run makes
before it starts."""

from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlzoo import checkpoint, get_algorithm
from rlzoo.checkpoint import MANIFEST, CheckpointError, Checkpointer, damage
from rlzoo.metrics import truncate_after
from rlzoo.testing import random_batch
from rlzoo.train import RunConfig, Trainer
from rlzoo.train.interrupts import AbortedWithoutSaving, InterruptGuard
from rlzoo.update import TrainState, algorithm_loss, make_update

TINY = dict(
    model="tiny", prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4, eval_size=4, sft_steps=0,
    eval_every=0, checkpoint_every=1, progress=False, tensorboard=False,
)


def run_config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{**TINY, "run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), **kw})


# -- checkpoints ---------------------------------------------------------------

def tree(value: float) -> dict:
    return {"w": jnp.full((64,), value, jnp.float32), "b": jnp.arange(3, dtype=jnp.int32)}


def largest_file(step_dir):
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST), key=lambda p: p.stat().st_size)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def delete(path):
    path.unlink()


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("harm, symptom", [(truncate, "bytes"), (empty, "bytes"), (delete, "missing"),
                                           (flip_a_bit, "digest")])
def test_restore_falls_back_past_a_damaged_newest_step(tmp_path, harm, symptom):
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, tree(1.0), {"step": 1})
    ckpt.save(2, tree(2.0), {"step": 2})
    victim = largest_file(tmp_path / "checkpoints" / "2")
    harm(victim)
    warnings = []
    state, meta = ckpt.restore(tree(0.0), warn=warnings.append)
    assert meta["step"] == 1 and float(state["w"][0]) == 1.0
    assert len(warnings) == 1 and "checkpoint step 2 is damaged" in warnings[0] and symptom in warnings[0]
    assert str(victim.relative_to(tmp_path / "checkpoints" / "2")) in warnings[0], "the warning names the file"
    assert ckpt.steps() == [1], "the damaged step is moved out of the way of the next save"
    assert [p.name.split("-")[0] for p in (tmp_path / "checkpoints.damaged").iterdir()] == ["2"], "and kept"
    ckpt.save(2, tree(3.0), {"step": 2})  # the resumed run saves step 2 again
    ckpt.close()


def test_no_intact_checkpoint_is_an_error_naming_each_damage(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, tree(1.0), {"step": 1})
    (tmp_path / "checkpoints" / "1" / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="no intact checkpoint .*step 1: no manifest"):
        ckpt.restore(tree(0.0), warn=lambda message: None)
    ckpt.close()


def test_an_older_step_is_deleted_only_after_a_newer_one_is_verified(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path / "checkpoints", max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, tree(float(step)), {"step": step})
    assert ckpt.steps() == [2, 3] and all(damage(tmp_path / "checkpoints" / str(s)) is None for s in (2, 3))

    def killed_before_the_manifest(step_dir):
        raise OSError("killed")

    monkeypatch.setattr(checkpoint, "write_manifest", killed_before_the_manifest)
    with pytest.raises(OSError):
        ckpt.save(4, tree(4.0), {"step": 4})
    assert ckpt.steps() == [2, 3, 4], "both verified steps survive an unverified newer one"
    state, meta = ckpt.restore(tree(0.0), warn=lambda message: None)
    assert meta["step"] == 3
    ckpt.close()


def test_a_partial_orbax_write_is_cleared_on_open(tmp_path):
    partial = tmp_path / "checkpoints" / f"5{checkpoint.TMP_SUFFIX}-123"
    partial.mkdir(parents=True)
    (partial / "junk").write_text("x")
    Checkpointer(tmp_path / "checkpoints").close()
    assert not partial.exists()


# -- metrics ---------------------------------------------------------------------

def test_metrics_are_cut_back_to_complete_records_at_or_before_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(4)) + '{"step": 4, "lo')
    assert truncate_after(path, 2) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2]
    assert truncate_after(path, 2) == 0


# -- interrupts --------------------------------------------------------------------

def test_a_ctrl_c_inside_a_critical_section_waits_for_its_end():
    finished = []
    with InterruptGuard(log=lambda message: None) as guard:
        with pytest.raises(KeyboardInterrupt):
            with guard.critical():
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("rest of the update")
        assert finished == ["rest of the update"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # outside: at once
            finished.append("never")
        with pytest.raises(AbortedWithoutSaving):
            with guard.critical():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("never")
    assert finished == ["rest of the update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the previous handler is back"


# -- the update --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_update(tmp_path_factory):
    trainer = Trainer(run_config(tmp_path_factory.mktemp("update")))
    step = jax.jit(make_update(trainer.graphdef, algorithm_loss(trainer.algo, trainer.cfg), optax.adam(1e-2)))
    rollout, _ = random_batch(0, batch=4, length=6, group_size=2, vocab=trainer.model_cfg.vocab_size)
    state = TrainState(params=trainer.state.params, opt_state=optax.adam(1e-2).init(trainer.state.params),
                       algo_state=trainer.state.algo_state, step=jnp.zeros((), jnp.int32), rng=trainer.state.rng)
    return step, state, rollout


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_a_non_finite_update_is_not_applied(tiny_update, poison):
    step, state, rollout = tiny_update
    adv = jnp.where(rollout.loss_mask, float(poison), 0.0)
    new, metrics = step(state, rollout, adv)
    assert float(metrics["update_skipped"]) == 1.0
    for before, after in zip(leaves(state), leaves(new)):
        np.testing.assert_array_equal(before, after)
    moved, metrics = step(state, rollout, jnp.where(rollout.loss_mask, 1.0, 0.0))
    assert float(metrics["update_skipped"]) == 0.0 and int(moved.step) == 1


def test_a_minibatch_without_trained_tokens_changes_nothing(tiny_update):
    step, state, rollout = tiny_update
    weighed_out = rollout.replace(sample_weight=jnp.zeros_like(rollout.sample_weight))
    new, _ = step(state, weighed_out, jnp.where(rollout.loss_mask, 1.0, 0.0))
    for before, after in zip(leaves(state), leaves(new)):
        np.testing.assert_array_equal(before, after)


# -- before a run starts --------------------------------------------------------------

def test_resume_refuses_changed_settings_and_keeps_the_config_history(tmp_path):
    Trainer(run_config(tmp_path, steps=1)).train()
    with pytest.raises(ValueError, match=r"--learning-rate 0.0002 -> 0.001\); pass --allow-config-change"):
        Trainer(run_config(tmp_path, steps=2, resume=True, learning_rate=1e-3)).train()
    with pytest.raises(ValueError, match=r"--clip-eps-low 0.2 -> 0.3"):
        algo = get_algorithm("grpo")
        Trainer(run_config(tmp_path, steps=2, resume=True), algo.Config(clip_eps_low=0.3)).train()
    log = []
    Trainer(run_config(tmp_path, steps=2, resume=True, learning_rate=1e-3, allow_config_change=True),
            log=log.append).train()
    assert any("resuming with changed settings: --learning-rate 0.0002 -> 0.001" in line for line in log)
    history = [json.loads(line) for line in (tmp_path / "run" / "config_history.jsonl").read_text().splitlines()]
    assert [(h["step"], h["run"]["learning_rate"]) for h in history] == [(0, 2e-4), (1, 1e-3)]
    with pytest.raises(ValueError, match="already holds a run .*pass --resume"):
        Trainer(run_config(tmp_path, steps=2)).train()


def test_a_new_run_keeps_an_earlier_run_in_the_default_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = {**TINY, "cache_dir": str(tmp_path / "cache"), "steps": 1}
    first = Trainer(RunConfig(**settings)).train()["run_dir"]
    log = []
    second = Trainer(RunConfig(**settings), log=log.append).train()["run_dir"]
    assert (first, second) == ("runs/grpo-arithmetic-0", "runs/grpo-arithmetic-0-2")
    assert "holds an earlier run (kept)" in log[0]
    assert (tmp_path / first / "checkpoints" / "1" / MANIFEST).is_file()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Trainer(run_config(tmp_path))


def test_reference_solutions_beyond_the_budget_are_announced(tmp_path):
    log = []
    Trainer(run_config(tmp_path, max_new_tokens=2), log=log.append)
    warning = [line for line in log if line.startswith("warning:")]
    assert len(warning) == 1 and "need more than --max-new-tokens 2 tokens" in warning[0]
    log.clear()
    Trainer(run_config(tmp_path, max_new_tokens=8), log=log.append)
    assert not [line for line in log if line.startswith("warning:")]
