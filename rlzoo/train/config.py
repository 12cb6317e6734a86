"""The run's settings (everything except the algorithm's own Config)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything about a run except the algorithm's own Config."""

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
    steps: int = 600
    """RL steps (one batch of prompts each)."""
    prompts_per_step: int = 32
    """Prompts sampled per step; rows per step = prompts_per_step · samples_per_prompt."""
    samples_per_prompt: int = 8
    """K: completions per prompt (the group size)."""
    preference_data: str | None = None
    """Offline preference pairs (a JSON-lines file of {"prompt", "chosen",
    "rejected"}) to train a pairwise algorithm on instead of sampled groups;
    each step takes --prompts-per-step pairs."""
    preference_max_length: int = 256
    """Token budget of prompt + response for --preference-data pairs."""
    max_new_tokens: int = 8
    """Generation budget per completion."""
    temperature: float = 1.0
    """Sampling temperature (the loss evaluates the policy at the same temperature)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1: off)."""
    epochs: int = 1
    """Passes over each step's batch."""
    minibatches: int = 1
    """Optimiser steps per epoch (the batch is split at group boundaries)."""
    microbatches: int = 1
    """Gradient-accumulation pieces per minibatch (exact: same gradient)."""
    learning_rate: float = 2e-4
    """AdamW learning rate of the RL phase."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip (0: off)."""
    max_sampling_rounds: int = 3
    """Dynamic sampling (algorithms that declare a group filter, e.g. DAPO with
    dynamic_sampling=True): draw up to this many batches of prompts per step to
    fill the batch with kept groups; the rest of the batch weighs 0."""
    ref_refresh_every: int = 0
    """Copy the policy into the reference every N steps (0: frozen reference)."""
    eval_every: int = 50
    """Held-out evaluation every N steps (and at the start and end)."""
    eval_size: int = 200
    """Held-out prompts per evaluation (greedy decoding)."""
    checkpoint_every: int = 100
    """Checkpoint every N steps (and at the end and on Ctrl-C)."""
    seed: int = 0
    """Seed of the data order, sampling and initialisation."""
    run_dir: str | None = None
    """Output directory (default runs/<algo>-<task>-<seed>)."""
    resume: bool = False
    """Continue from the latest checkpoint in run_dir."""
    sft_steps: int = 850
    """Supervised warm-start steps before RL (0: none); cached across runs."""
    sft_batch: int = 64
    """Examples per supervised step."""
    sft_learning_rate: float = 3e-3
    """AdamW learning rate of the warm start."""
    cache_dir: str | None = None
    """Where warm starts are cached (default ~/.cache/rlzoo)."""
    mesh_data: int = -1
    """Mesh size of the data axis (-1: all remaining devices)."""
    mesh_fsdp: int = 1
    """Mesh size of the fsdp axis."""
    mesh_tensor: int = 1
    """Mesh size of the tensor axis."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    progress: bool = True
    """Show a progress bar on the console."""
    coordinator_address: str | None = None
    """Multi-host: process 0's host:port (every process passes the same), or
    'auto' to detect the cluster (TPU pods, SLURM, Open MPI); unset: one process.
    run_dir and cache_dir must then be on a file system all processes share."""
    num_processes: int = 1
    """Multi-host: how many processes take part."""
    process_id: int = 0
    """Multi-host: this process's index in [0, num_processes)."""

    def __post_init__(self):
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "preference_max_length", "epochs",
                     "minibatches", "microbatches", "eval_size", "sft_batch", "max_sampling_rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a {'non-negative' if name == 'steps' else 'positive'} integer, got {value!r}")
        for name in ("sft_steps", "eval_every", "checkpoint_every", "ref_refresh_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.sft_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top-p <= 1, top-k >= 0")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"need 0 <= --process-id < --num-processes, got {self.process_id} and {self.num_processes}")
        if self.num_processes > 1 and self.coordinator_address in (None, "auto"):
            raise ValueError("--num-processes > 1 needs --coordinator-address host:port of process 0")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def resolved_run_dir(self) -> pathlib.Path:
        name = self.algo if self.advantage is None else f"{self.algo}+{self.advantage}"
        return pathlib.Path(self.run_dir or f"runs/{name}-{self.task}-{self.seed}")
