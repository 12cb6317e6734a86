"""What a run is built from: the policy (preset, SmolLM2 or a Hugging Face
directory) with its tokenizer, and the task."""

from __future__ import annotations

import os

import jax

from rlzoo.policy import PRESETS, create_model, load_hf, load_smollm2
from rlzoo.tasks import Task, get_task
from rlzoo.tokenizers import ByteTokenizer, HFTokenizer

SMOLLM2 = "smollm2-135m"


def load_policy(name: str, *, seed: int, mesh, value_head: bool = False):
    """(model, model config, tokenizer, chat) for a preset name, smollm2-135m or an HF directory."""
    if name == SMOLLM2:
        model, cfg, tokenizer = load_smollm2()
        chat = True
    elif name in PRESETS:
        cfg = PRESETS[name]
        tokenizer = ByteTokenizer()
        if cfg.vocab_size < 259:
            raise ValueError(f"preset {name} has too small a vocabulary for the byte tokenizer")
        model, chat = None, False
    elif os.path.isdir(name):
        tokenizer = HFTokenizer.from_dir(name)  # before the weights: missing tokenizer files fail in a moment
        model, cfg = load_hf(name, mesh=mesh)
        chat = True
    else:
        raise ValueError(
            f"--model {name!r} is neither a preset ({', '.join(PRESETS)}) nor an existing directory"
        )
    if model is None or (value_head and not cfg.value_head):
        if model is not None:
            raise ValueError(f"this algorithm needs a value head; {name} has none (use a preset)")
        cfg = cfg.replace(value_head=value_head)
        model = create_model(cfg, seed=seed, mesh=mesh)
    return model, cfg, tokenizer, chat


def enable_compilation_cache(cache_dir) -> None:
    """Cache every compiled program on disk (a rerun of the same shapes then
    skips XLA), unless the user already chose a cache directory."""
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir / "jax"))
        # jax caches only programs that took over a second by default; a
        # run's many small ones add up to most of its first step.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def make_task(name: str, options: dict, data_dir: str | None) -> Task:
    """The task `name` with its constructor options (and data directory)."""
    options = dict(options)
    if data_dir is not None:
        options["data_dir"] = data_dir
    return get_task(name, **options)
