"""The run's settings (everything except the algorithm's own Config)."""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from typing import Any

from rlzoo.pieces import ConfigBase, setting

RESUMABLE_CHANGES = frozenset({
    "steps", "resume", "allow_config_change", "eval_every", "eval_size", "checkpoint_every", "progress",
    "tensorboard", "cache_dir", "run_dir", "coordinator_address", "num_processes", "process_id",
    "sft_steps", "sft_batch", "sft_learning_rate", "skip_nonfinite_steps",
})
"""Run settings a resumed run may change without --allow-config-change: how
long it runs, what it logs and where, and the warm start (not re-run)."""


@dataclasses.dataclass(frozen=True)
class RunConfig(ConfigBase):
    """Everything about a run except the algorithm's own Config. Every number
    is checked on construction (finite, in its declared range)."""

    algo: str = "grpo"
    """Registered algorithm name (`rlzoo list`)."""
    advantage: str | None = None
    """Pair the algorithm's loss with this algorithm's advantage estimator
    (e.g. --algo grpo --advantage bnpo; policy-loss, advantage and reinforce
    families). Unset: the algorithm's own."""
    task: str = "arithmetic"
    """Task name: arithmetic (built in) or gsm8k (needs --data-dir)."""
    task_options: tuple[tuple[str, Any], ...] = ()
    """Extra task constructor arguments, e.g. (("digits", 3),)."""
    data_dir: str | None = None
    """Prepared TFDS data directory for data-set tasks (gsm8k)."""
    model: str = "tiny"
    """A preset name (tiny, smollm2-135m, qwen2.5-0.5b, llama-3.2-1b: random init
    except smollm2-135m, which loads the pretrained instruct model), or a
    Hugging Face checkpoint directory."""
    steps: int = setting(600, ge=0)
    """RL steps (one batch of prompts each)."""
    prompts_per_step: int = setting(32, ge=1)
    """Prompts sampled per step; rows per step = prompts_per_step · samples_per_prompt."""
    samples_per_prompt: int = setting(8, ge=1)
    """K: completions per prompt (the group size)."""
    preference_data: str | None = None
    """Offline preference pairs (a JSON-lines file of {"prompt", "chosen",
    "rejected"}) to train a pairwise algorithm on instead of sampled groups;
    each step takes --prompts-per-step pairs."""
    preference_max_length: int = setting(256, ge=2)
    """Token budget of prompt + response for --preference-data pairs."""
    max_new_tokens: int = setting(8, ge=1)
    """Generation budget per completion."""
    temperature: float = setting(1.0, ge=0.0)
    """Sampling temperature (the loss evaluates the policy at the same temperature)."""
    top_k: int = setting(0, ge=0)
    """Top-k sampling (0: off)."""
    top_p: float = setting(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (1: off)."""
    stop_at_eos: bool = True
    """End a completion at the tokenizer's end token; false: every completion
    runs to --max-new-tokens (fixed-length benchmarks)."""
    epochs: int = setting(1, ge=1)
    """Passes over each step's batch."""
    minibatches: int = setting(1, ge=1)
    """Optimiser steps per epoch (the batch is split at group boundaries)."""
    microbatches: int = setting(1, ge=1)
    """Gradient-accumulation pieces per minibatch (exact: same gradient)."""
    learning_rate: float = setting(2e-4, gt=0.0)
    """AdamW learning rate of the RL phase."""
    max_grad_norm: float = setting(1.0, ge=0.0)
    """Global gradient-norm clip (0: off)."""
    max_sampling_rounds: int = setting(3, ge=1)
    """Dynamic sampling (algorithms that declare a group filter, e.g. DAPO with
    dynamic_sampling=True): draw up to this many batches of prompts per step to
    fill the batch with kept groups; the rest of the batch weighs 0."""
    ref_refresh_every: int = setting(0, ge=0)
    """Copy the policy into the reference every N steps (0: frozen reference)."""
    eval_every: int = setting(50, ge=0)
    """Held-out evaluation every N steps (and at the start and end)."""
    eval_size: int = setting(200, ge=1)
    """Held-out prompts per evaluation (greedy decoding)."""
    checkpoint_every: int = setting(100, ge=0)
    """Checkpoint every N steps (and at the end and on Ctrl-C)."""
    seed: int = 0
    """Seed of the data order, sampling and initialisation."""
    run_dir: str | None = None
    """Output directory (default runs/<algo>-<task>-<seed>)."""
    resume: bool = False
    """Continue from the newest intact checkpoint in run_dir (an error when
    there is none)."""
    allow_config_change: bool = False
    """With --resume: accept settings that differ from the checkpoint's
    (each change is logged and kept in config_history.jsonl)."""
    skip_nonfinite_steps: int = setting(0, ge=0)
    """Skip (do not apply) a minibatch update whose loss, gradient or new
    parameters are non-finite, at most this many steps per run; beyond that
    (and by default) the run stops at the first non-finite step."""
    sft_steps: int = setting(850, ge=0)
    """Supervised warm-start steps before RL (0: none); cached across runs."""
    sft_batch: int = setting(64, ge=1)
    """Examples per supervised step."""
    sft_learning_rate: float = setting(3e-3, gt=0.0)
    """AdamW learning rate of the warm start."""
    cache_dir: str | None = None
    """Where warm starts and compiled programs are cached (default
    ~/.cache/rlzoo; compiled programs go to <cache_dir>/jax unless
    JAX_COMPILATION_CACHE_DIR or jax's config already names a directory)."""
    mesh_data: int = setting(-1, ge=-1)
    """Mesh size of the data axis (-1: all remaining devices)."""
    mesh_fsdp: int = setting(1, ge=1)
    """Mesh size of the fsdp axis."""
    mesh_tensor: int = setting(1, ge=1)
    """Mesh size of the tensor axis."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    progress: bool = True
    """Show a progress bar on the console."""
    coordinator_address: str | None = None
    """Multi-host: process 0's host:port (every process passes the same), or
    'auto' to detect the cluster (TPU pods, SLURM, Open MPI); unset: one process.
    run_dir and cache_dir must then be on a file system all processes share."""
    num_processes: int = setting(1, ge=1)
    """Multi-host: how many processes take part."""
    process_id: int = setting(0, ge=0)
    """Multi-host: this process's index in [0, num_processes)."""

    def __post_init__(self):
        super().__post_init__()
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if hints[field.name] is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"--{field.name.replace('_', '-')} must be an integer, got {value!r}")
        if self.mesh_data == 0:
            raise ValueError("--mesh-data must be -1 (all remaining devices) or a positive size, got 0")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"need 0 <= --process-id < --num-processes, got {self.process_id} and {self.num_processes}")
        if self.num_processes > 1 and self.coordinator_address in (None, "auto"):
            raise ValueError("--num-processes > 1 needs --coordinator-address host:port of process 0")
        if self.allow_config_change and not self.resume:
            raise ValueError("--allow-config-change only applies with --resume")

    def settings_scope(self) -> str:
        return ""

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def resolved_cache_dir(self) -> pathlib.Path:
        return pathlib.Path(self.cache_dir or pathlib.Path("~/.cache/rlzoo").expanduser())

    def resolved_run_dir(self) -> pathlib.Path:
        name = self.algo if self.advantage is None else f"{self.algo}+{self.advantage}"
        return pathlib.Path(self.run_dir or f"runs/{name}-{self.task}-{self.seed}")
