"""Runs `rlzoo train` in this process with one fault injected, for
test_faults.py (each run is its own subprocess).

    python fault_driver.py PHASE SIGNAL AT -- <rlzoo train arguments>

PHASE is where the fault strikes during step index AT (0-based):
  sampling    before the step's completions are sampled
  update      inside the update, before the first minibatch is applied
  evaluation  in the held-out evaluation that follows the step
  checkpoint  in the step's checkpoint write, after orbax commits and
              before the manifest is written
  nan         the step's advantages become NaN (SIGNAL is ignored)
  none        no fault
SIGNAL is SIGINT or SIGKILL, sent by the process to itself.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
import jax.numpy as jnp

from rlzoo import checkpoint, cli
from rlzoo.train import loop


def main() -> int:
    phase, signal_name, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    argv = sys.argv[sys.argv.index("--") + 1:]
    current = {"step": -1}

    def fire() -> None:
        os.kill(os.getpid(), getattr(signal, signal_name))

    original_step = loop.Trainer.step

    def step(self, index):
        current["step"] = index
        return original_step(self, index)

    loop.Trainer.step = step

    if phase == "sampling":
        original_collect = loop.Trainer.collect

        def collect(self, index, key):
            if index == at:
                fire()
            return original_collect(self, index, key)

        loop.Trainer.collect = collect
    elif phase in ("update", "nan"):
        original_minibatches = loop.handoff.minibatches

        def minibatches(*args, **kwargs):
            for minibatch, targets in original_minibatches(*args, **kwargs):
                if current["step"] == at:
                    if phase == "nan":
                        targets = jax.tree.map(lambda t: t * jnp.nan, targets)
                    else:
                        fire()
                yield minibatch, targets

        loop.handoff.minibatches = minibatches
    elif phase == "evaluation":
        original_evaluate = loop.Trainer.evaluate

        def evaluate(self):
            if current["step"] == at:
                fire()
            return original_evaluate(self)

        loop.Trainer.evaluate = evaluate
    elif phase == "checkpoint":
        original_manifest = checkpoint.write_manifest

        def write_manifest(step_dir):
            if int(step_dir.name) == at + 1:
                fire()
            return original_manifest(step_dir)

        checkpoint.write_manifest = write_manifest
    elif phase != "none":
        raise SystemExit(f"unknown phase {phase}")
    return cli.main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
