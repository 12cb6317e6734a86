"""orbax checkpoints of a training run: the train state (params, optimiser
state, algorithm state, step, RNG) plus a JSON record of the run config and
data position, each verified before it counts.

What a run directory can rely on:

* orbax writes each step into a temporary directory and renames it when
  complete, so a run killed while saving leaves the previous checkpoint
  intact;
* after orbax commits a step, its files are read back and their sizes and
  SHA-256 digests written to `MANIFEST` (atomically, by rename). A step
  without a manifest, or whose files no longer match it (truncated, emptied,
  deleted or bit-rotted), is damaged;
* `restore` takes the newest intact step: each damaged newer step is named in
  a warning and moved aside to `<checkpoints>.damaged/` (kept, not deleted),
  so the run continues from the step before it;
* older steps are deleted only after a newer one is verified (`max_to_keep`
  verified steps stay).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

MANIFEST = "MANIFEST.json"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
"""orbax's suffix for a step directory still being written."""


class CheckpointError(ValueError):
    """No intact checkpoint to restore (each damaged one was named)."""


def _digest(path: pathlib.Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _files(step_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    return {str(p.relative_to(step_dir)): p for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(step_dir: pathlib.Path) -> None:
    """Record the size and digest of every file of a committed step."""
    manifest = {name: {"bytes": p.stat().st_size, "sha256": _digest(p)} for name, p in _files(step_dir).items()}
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, step_dir / MANIFEST)


def damage(step_dir: pathlib.Path) -> str | None:
    """What is wrong with a step directory (None: it matches its manifest)."""
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest: the save did not finish"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{MANIFEST} is unreadable"
    present = _files(step_dir)
    for name, want in manifest.items():
        path = present.get(name)
        if path is None:
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size} bytes, {want['bytes']} were written"
        if _digest(path) != want["sha256"]:
            return f"{name} does not match its digest (corrupted)"
    extra = sorted(set(present) - set(manifest))
    return f"unexpected file {extra[0]}" if extra else None


class Checkpointer:
    """Save / restore the verified train state of one run directory."""

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 2, *, primary: bool = True):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory} is a file, not a checkpoint directory")
        self.max_to_keep = max_to_keep
        self.primary = primary
        if primary and self.directory.is_dir():
            # A save cut off before orbax's rename: never a checkpoint. Removed
            # here, synchronously (orbax's own clean-up runs in a thread that
            # can outlive a short-lived process).
            for partial in self.directory.glob(f"*{TMP_SUFFIX}*"):
                shutil.rmtree(partial, ignore_errors=True)
        # Retention is ours (see `save`): orbax would delete an older step as
        # soon as a newer one is committed, before it is verified.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False),
        )

    def steps(self) -> list[int]:
        """Committed steps, oldest first (intact or not)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step (not yet verified; `restore` verifies)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Write `state` (a pytree of arrays) and `meta` (JSON-able) as step
        `step`, verify it, then drop the steps beyond `max_to_keep`."""
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()
        if self.primary:
            write_manifest(self._step_dir(step))
            for old in self.steps()[:-self.max_to_keep]:
                self._manager.delete(old)

    def restore(self, like: Any, *, warn: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
        """The newest intact step's state (with the structure, dtypes and
        shardings of `like`) and its meta record. Damaged newer steps are
        named through `warn` and moved aside."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        damaged = []
        for step in reversed(steps):
            problem = damage(self._step_dir(step))
            if problem is None:
                try:
                    restored = self._manager.restore(
                        step,
                        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
                    )
                    if damaged:
                        self._manager.reload()
                    return restored.state, restored.meta
                except (ValueError, OSError, KeyError, TypeError) as err:
                    problem = f"orbax could not read it ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            moved = self._set_aside(step)
            warn(f"checkpoint step {step} is damaged: {problem}; moved it to {moved} and falling back to an older step")
            damaged.append(f"step {step}: {problem}")
        raise CheckpointError(f"no intact checkpoint in {self.directory} ({'; '.join(damaged)})")

    def close(self) -> None:
        self._manager.close()

    def _step_dir(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def _set_aside(self, step: int) -> pathlib.Path:
        """Move a damaged step out of the checkpoint directory (never delete it)."""
        target = self.directory.with_name(self.directory.name + ".damaged") / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if self.primary:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self._step_dir(step)), str(target))
        return target
