"""What a run is built from: the policy (preset, SmolLM2 or a Hugging Face
directory) with its tokenizer, and the task."""

from __future__ import annotations

import os

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


def make_task(name: str, options: dict, data_dir: str | None) -> Task:
    """The task `name` with its constructor options (and data directory)."""
    options = dict(options)
    if data_dir is not None:
        options["data_dir"] = data_dir
    return get_task(name, **options)
