"""Nothing compiles after the first step: every jitted function (and every
eager op) of a step is lowered once, in each configuration the trainer
supports. A recompile costs seconds per function on a real model."""

from __future__ import annotations

import collections

import jax

import pytest
from jax import monitoring

from rlzoo import get_algorithm
from rlzoo.train import RunConfig, Trainer
from rlzoo.train.setup import enable_compilation_cache

# Fired once per lowering to MLIR: each jit cache miss, whether or not the
# persistent cache then supplies the executable.
LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_counts: collections.Counter = collections.Counter()
_phase = ["setup"]


def _listener(event: str, duration: float, **kwargs) -> None:
    if event == LOWERING:
        _counts[_phase[0]] += 1


monitoring.register_event_duration_secs_listener(_listener)

TINY = dict(
    model="tiny", prompts_per_step=2, samples_per_prompt=4, max_new_tokens=4, eval_size=4, sft_steps=0,
    eval_every=0, checkpoint_every=0, progress=False, tensorboard=False,
)


@pytest.mark.parametrize("algo, settings, algo_settings", [
    ("grpo", dict(mesh_data=1), {}),                          # one device (the trainer's own mesh of 1)
    ("dapo", dict(minibatches=2), dict(dynamic_sampling=True)),  # 8 simulated devices, refills, 2 minibatches
    ("dpo", dict(mesh_data=1), {}),                           # pairwise
])
def test_no_compilation_after_the_first_step(tmp_path, algo, settings, algo_settings):
    trainer = Trainer(RunConfig(**{**TINY, **settings, "algo": algo, "run_dir": str(tmp_path / "run")}),
                      get_algorithm(algo).Config(**algo_settings))
    # The order of `train()`: the first evaluation, then steps with evaluations between.
    schedule = [("eval", trainer.evaluate), ("step 0", lambda: trainer.step(0)), ("step 1", lambda: trainer.step(1)),
                ("eval again", trainer.evaluate), ("step 2", lambda: trainer.step(2))]
    _counts.clear()
    for name, run in schedule:
        _phase[0] = name
        run()
    assert _counts["step 0"] > 0, "the listener sees compilations"
    later = {name: _counts[name] for name in ("step 1", "eval again", "step 2")}
    assert later == {"step 1": 0, "eval again": 0, "step 2": 0}, f"recompiled after the first step: {later}"


def test_compiled_programs_are_cached_in_the_user_cache_unless_a_cache_is_chosen(tmp_path):
    chosen = jax.config.jax_compilation_cache_dir
    minimum = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        enable_compilation_cache(tmp_path)
        assert jax.config.jax_compilation_cache_dir == chosen, "a directory already chosen is kept"
        jax.config.update("jax_compilation_cache_dir", None)
        enable_compilation_cache(tmp_path)
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", minimum)
