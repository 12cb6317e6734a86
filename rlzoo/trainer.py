"""The outer loop: sample K completions per prompt -> rewards -> advantages ->
minibatch epochs of the jitted, sharded update; plus the supervised warm
start, held-out evaluation, metrics and checkpoints.

Batch sizes are stated in both units: `prompts_per_step` prompts, each with
`samples_per_prompt` (K) completions, are `prompts_per_step · K` rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlzoo import ops
from rlzoo.checkpoint import Checkpointer
from rlzoo.metrics import MetricsWriter, plot_run
from rlzoo.policy import PRESETS, create_model, load_hf, load_smollm2, param_shardings
from rlzoo.registry import Algorithm, get_algorithm
from rlzoo.rollout import Rollout, concat_rows
from rlzoo.sampling import Sampler, response_tokens
from rlzoo.sharding import host_readable, initialize_distributed, is_primary, make_mesh, shard_batch
from rlzoo.tasks import Example, Task, get_task
from rlzoo.tokenizers import ByteTokenizer, HFTokenizer
from rlzoo.update import TrainState, algorithm_loss, make_optimizer, make_update, policy_stats_fn

SMOLLM2 = "smollm2-135m"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything about a run except the algorithm's own Config."""

    algo: str = "grpo"
    """Registered algorithm name (`rlzoo list`)."""
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
    """Dynamic sampling (algorithms whose Config has dynamic_sampling=True, e.g.
    DAPO): draw up to this many batches of prompts per step to fill the batch
    with groups whose rewards differ; the rest of the batch weighs 0."""
    ref_refresh_every: int = 0
    """Copy the policy into the reference every N steps (0: frozen reference)."""
    pair_mode: str = "best_vs_worst"
    """How pairwise algorithms build pairs from each group: best_vs_worst or all_pairs."""
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
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "epochs",
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
        if self.pair_mode not in ("best_vs_worst", "all_pairs"):
            raise ValueError(f"--pair-mode must be best_vs_worst or all_pairs, got {self.pair_mode!r}")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"need 0 <= --process-id < --num-processes, got {self.process_id} and {self.num_processes}")
        if self.num_processes > 1 and self.coordinator_address in (None, "auto"):
            raise ValueError("--num-processes > 1 needs --coordinator-address host:port of process 0")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def resolved_run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.run_dir or f"runs/{self.algo}-{self.task}-{self.seed}")


# --------------------------------------------------------------------------
# Model, tokenizer, task
# --------------------------------------------------------------------------

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
        model, cfg = load_hf(name, mesh=mesh)
        tokenizer = HFTokenizer.from_dir(name)
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


def encode_prompt(tokenizer, text: str, chat: bool) -> list[int]:
    if chat:
        return tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}]))
    return tokenizer.encode(text, add_bos=True)


def make_task(run: RunConfig) -> Task:
    options = dict(run.task_options)
    if run.data_dir is not None:
        options["data_dir"] = run.data_dir
    return get_task(run.task, **options)


SENTENCE_END = (".", "!", "?", "\n")


def sentence_end_ids(tokenizer, vocab_size: int) -> np.ndarray:
    """[V] bool: token ids whose text ends a sentence (for segment-level methods)."""
    ends = np.zeros(vocab_size, bool)
    for i in range(vocab_size):
        try:
            text = tokenizer.decode([i])
        except Exception:  # ids outside the tokenizer (padding rows of the embedding)
            continue
        ends[i] = text.rstrip(" ").endswith(SENTENCE_END)
    return ends


def sentence_segment_ids(tokens: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[B, T] int32: a new segment starts after every sentence-ending token."""
    boundary = ends[np.clip(tokens, 0, len(ends) - 1)]
    return np.concatenate([np.zeros((len(tokens), 1), np.int32), np.cumsum(boundary, 1)[:, :-1].astype(np.int32)], 1)


def stable_id(text: str) -> int:
    """A persistent prompt id (the same text gets the same id in every run)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def _answer_id(answer: str | None) -> int:
    return -1 if answer is None else stable_id(answer)


# --------------------------------------------------------------------------
# Supervised warm start
# --------------------------------------------------------------------------

def sft_batch(task: Task, tokenizer, chat: bool, rng: np.random.Generator, n: int, length: int) -> Rollout:
    """Prompt + reference solution + EOS, loss on the solution and EOS, right-padded to `length`."""
    tokens = np.full((n, length), tokenizer.pad_id, np.int32)
    mask = np.zeros((n, length), bool)
    for row, ex in enumerate(task.train_examples(rng, n)):
        prompt = encode_prompt(tokenizer, ex.prompt, chat)
        answer = tokenizer.encode(ex.solution) + [tokenizer.eos_id]
        ids = (prompt + answer)[:length]
        tokens[row, :len(ids)] = ids
        mask[row, len(prompt):len(ids)] = True
    return Rollout(
        tokens=jnp.asarray(tokens), loss_mask=jnp.asarray(mask),
        behaviour_logprobs=jnp.zeros(tokens.shape, jnp.float32),
        rewards=jnp.zeros((n,), jnp.float32), sample_weight=jnp.ones((n,), jnp.float32),
    )


def nll_loss(stats, rollout, adv, algo_state):
    """Token-mean negative log-likelihood of the trained tokens."""
    nll = ops.aggregate(-stats.logprobs, rollout, "token-mean")
    return nll, {"nll": nll}


# --------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------

class Trainer:
    """One run: `Trainer(run, algo_cfg).train()` returns the summary dict."""

    def __init__(self, run: RunConfig, algo_cfg: Any = None, *, log: Callable[[str], None] = print):
        initialize_distributed(run.coordinator_address, run.num_processes, run.process_id)
        self.run = run
        self.primary = is_primary()  # the one process that writes run files and logs
        self.log = log if self.primary else lambda message: None
        self.algo: Algorithm = get_algorithm(run.algo)
        self.cfg = algo_cfg if algo_cfg is not None else self.algo.Config()
        self.outputs = self.algo.policy_outputs(self.cfg)
        self.task = make_task(run)
        if self.algo.pairwise and run.samples_per_prompt < 2:
            raise ValueError(f"{self.algo.name} is pairwise: --samples-per-prompt must be >= 2")
        self.mesh = make_mesh(run.mesh_data, run.mesh_fsdp, run.mesh_tensor)
        model, self.model_cfg, self.tokenizer, self.chat = load_policy(
            run.model, seed=run.seed, mesh=self.mesh, value_head="values" in self.outputs
        )
        self.graphdef, params = nnx.split(model)
        self.param_shardings = param_shardings(params, self.mesh)
        self.sampler = Sampler()
        self.run_dir = run.resolved_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = make_optimizer(run.learning_rate, run.max_grad_norm or None)
        self.state = TrainState(
            params=params,
            opt_state=jax.jit(self.optimizer.init)(params),
            algo_state=self.algo.init_state(self.cfg),
            step=jnp.zeros((), jnp.int32),
            rng=jax.random.key_data(jax.random.key(run.seed)),
        )
        self.state = self._on_mesh(self.state)
        self._reset_reference(params)
        self._sentence_ends = None
        self._compile()

    # -- compiled pieces -------------------------------------------------

    def _compile(self) -> None:
        run, temperature = self.run, max(self.run.temperature, 1e-6)
        old_outputs = frozenset({"values"} & self.outputs)
        if "old_topk_logprobs" in self.algo.required(self.cfg):
            old_outputs |= {"topk_logprobs"}
        self._old_stats = jax.jit(policy_stats_fn(self.graphdef, old_outputs, temperature))
        # The reference forward needs only log-probs.
        self._ref_stats = jax.jit(policy_stats_fn(self.graphdef, frozenset(), temperature)) if old_outputs else self._old_stats
        update = make_update(
            self.graphdef, algorithm_loss(self.algo, self.cfg), self.optimizer,
            outputs=self.outputs, microbatches=run.microbatches, temperature=temperature,
        )
        self._update = jax.jit(update, donate_argnums=0)
        self._advantages = jax.jit(lambda r, s: self.algo.advantages(r, self.cfg, s))

    def model(self, params=None):
        return nnx.merge(self.graphdef, self.state.params if params is None else params)

    # -- pieces of a step --------------------------------------------------

    def sample(self, examples: list[Example], num_samples: int, rng: jax.Array, greedy: bool = False) -> tuple[Rollout, list[str]]:
        prompts = [encode_prompt(self.tokenizer, ex.prompt, self.chat) for ex in examples]
        stop = getattr(self.tokenizer, "stop_ids", (self.tokenizer.eos_id,))
        rollout = self.sampler(
            self.model(), prompts, num_samples=num_samples, max_new_tokens=self.run.max_new_tokens, rng=rng,
            temperature=0.0 if greedy else self.run.temperature, top_k=self.run.top_k, top_p=self.run.top_p,
            eos_id=list(stop), pad_id=self.tokenizer.pad_id,
        )
        completions = [self.tokenizer.decode(ids) for ids in response_tokens(rollout)]
        return rollout, completions

    def score(self, rollout: Rollout, completions: list[str], examples: list[Example], k: int) -> Rollout:
        scores = [self.task.reward(c, examples[i // k]) for i, c in enumerate(completions)]
        names = self.task.reward_names
        return rollout.replace(
            rewards=jnp.asarray([s["reward"] for s in scores], jnp.float32),
            reward_components=jnp.asarray([[s[n] for n in names] for s in scores], jnp.float32),
            prompt_ids=jnp.asarray([stable_id(examples[i // k].prompt) for i in range(len(scores))], jnp.int32),
            answer_ids=jnp.asarray([_answer_id(self.task.answer(c)) for c in completions], jnp.int32),
        )

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy and mean reward on the held-out prompts."""
        examples = self.task.eval_examples()[: self.run.eval_size]
        rollout, completions = self.sample(examples, 1, jax.random.key(0), greedy=True)
        scores = [self.task.reward(c, ex) for c, ex in zip(completions, examples)]
        correct_key = self.task.reward_names[0]
        return {
            "eval_accuracy": float(np.mean([s[correct_key] for s in scores])),
            "eval_reward": float(np.mean([s["reward"] for s in scores])),
        }

    # -- the loop ----------------------------------------------------------

    def train(self) -> dict[str, Any]:
        run = self.run
        ckpt = Checkpointer(self.run_dir / "checkpoints")
        start = 0
        if run.resume and ckpt.latest_step() is not None:
            start = self._restore(ckpt)
            self.log(f"resumed from step {start} in {self.run_dir}")
        elif run.sft_steps:
            self._warm_start()
        if self.primary:
            (self.run_dir / "config.json").write_text(json.dumps(self._meta(start), indent=2, default=str))
        writer = MetricsWriter(self.run_dir, tensorboard=run.tensorboard, append=start > 0, enabled=self.primary)
        started = time.time()
        first_eval = last_eval = None
        if start == 0:
            first_eval = last_eval = writer.write(0, self.evaluate())
            self.log(f"step 0: held-out accuracy {first_eval['eval_accuracy']:.3f}")
        progress = _Progress(run.steps, start, enabled=run.progress and self.primary)
        step = start
        try:
            for step in range(start, run.steps):
                metrics = self.step(step)
                if run.eval_every and ((step + 1) % run.eval_every == 0 or step + 1 == run.steps):
                    last_eval = self.evaluate()
                    metrics |= last_eval
                writer.write(step + 1, metrics)
                progress.update(step + 1, metrics)
                if run.checkpoint_every and (step + 1) % run.checkpoint_every == 0:
                    ckpt.save(step + 1, self._saved_state(), self._meta(step + 1))
            step = run.steps
        except KeyboardInterrupt:
            self.log(f"\ninterrupted: saving a checkpoint at step {step} in {self.run_dir}")
            ckpt.save(step, self._saved_state(), self._meta(step))
            raise
        finally:
            progress.close()
            writer.close()
        if ckpt.latest_step() != run.steps:
            ckpt.save(run.steps, self._saved_state(), self._meta(run.steps))
        ckpt.close()
        plot = self.run_dir / "metrics.png"
        summary = {
            "algo": run.algo, "task": run.task, "model": run.model, "steps": run.steps,
            "wall_time_s": round(time.time() - started, 2),
            "start_accuracy": first_eval["eval_accuracy"] if first_eval else None,
            "final_accuracy": last_eval["eval_accuracy"] if last_eval else None,
            "run_dir": str(self.run_dir), "plot": str(plot),
        }
        if self.primary:
            plot_run(self.run_dir / "metrics.jsonl", plot, f"{run.algo} on {run.task}")
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def step(self, step: int) -> dict[str, float]:
        """One RL step; returns its metrics."""
        run = self.run
        key = jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), step)
        sample_key, shuffle_key = jax.random.split(key)
        t0 = time.time()
        rollout, sampled_tokens, rounds = self._collect(step, sample_key)
        rollout = self._with_logprobs(rollout, step)
        t1 = time.time()
        if self.algo.pairwise and rollout.group_size > 2:
            rollout = ops.make_pairs(rollout, run.pair_mode)
        self.algo.validate(rollout, self.cfg)  # a field the algorithm reads but nobody filled: a clear error
        if getattr(self.cfg, "dynamic_sampling", False):
            rollout = ops.drop_degenerate_groups(rollout)
        adv, algo_state = self._advantages(rollout, self.state.algo_state)
        adv = host_readable(adv)
        self.state = self.state.replace(algo_state=algo_state)
        update_metrics = []
        for epoch in range(run.epochs):
            order = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), rollout.num_groups))
            rows = (order[:, None] * rollout.group_size + np.arange(rollout.group_size)).reshape(-1)
            per_mb = len(rows) // run.minibatches
            for m in range(run.minibatches):
                index = rows[m * per_mb:(m + 1) * per_mb]
                minibatch = shard_batch(rollout.select_rows(index).with_normaliser(), self.mesh)
                self.state, metrics = self._update(self.state, minibatch, shard_batch(adv[index], self.mesh))
                update_metrics.append(host_readable(metrics))
        if self.algo.post_update is not None:
            self.state = self.state.replace(
                algo_state=self.algo.post_update(self.state.algo_state, update_metrics[-1], self.cfg)
            )
        if run.ref_refresh_every and (step + 1) % run.ref_refresh_every == 0:
            if self.prev_ref_params is not None:
                self.prev_ref_params = self.ref_params
            self.ref_params = jax.tree.map(jnp.copy, self.state.params)
        t2 = time.time()
        return self._step_metrics(rollout, adv, update_metrics, sampled_tokens, t1 - t0, t2 - t1) | {
            "sampling_rounds": float(rounds),
        }

    def _collect(self, step: int, key: jax.Array) -> tuple[Rollout, int, int]:
        """(scored rollout of prompts_per_step groups, sampled tokens, rounds).
        With dynamic sampling, batches of prompts are drawn until that many
        groups have rewards that differ (at most max_sampling_rounds batches;
        DAPO's outer loop), and the batch is completed with the earliest
        all-equal groups, which the filter then weighs 0."""
        run, k = self.run, self.run.samples_per_prompt
        data_rng = np.random.default_rng([run.seed, step])
        dynamic = getattr(self.cfg, "dynamic_sampling", False)
        batches, informative, sampled_tokens = [], 0, 0
        while len(batches) < (run.max_sampling_rounds if dynamic else 1) and informative < run.prompts_per_step:
            examples = self.task.train_examples(data_rng, run.prompts_per_step)
            round_key = key if not batches else jax.random.fold_in(key, len(batches))
            rollout, completions = self.sample(examples, k, round_key)
            batches.append(self.score(rollout, completions, examples, k))
            sampled_tokens += int(np.asarray(rollout.loss_mask).sum())
            informative += int(np.sum(~self._degenerate(batches[-1])))
        if not dynamic:
            return batches[0], sampled_tokens, 1
        joined = concat_rows(batches)
        # Informative groups first (in sampling order), then the earliest all-equal ones.
        order = np.argsort(self._degenerate(joined), kind="stable")[: run.prompts_per_step]
        rows = (order[:, None] * k + np.arange(k)).reshape(-1)
        return joined.select_rows(rows), sampled_tokens, len(batches)

    @staticmethod
    def _degenerate(rollout: Rollout) -> np.ndarray:
        """[groups] bool: the group's rewards are all equal."""
        return np.asarray(ops.degenerate_groups(rollout.rewards, rollout.group_size)).reshape(-1, rollout.group_size)[:, 0]

    def _with_logprobs(self, rollout: Rollout, step: int) -> Rollout:
        """Behaviour log-probs recomputed by the training forward pass at the
        sampling temperature (the sampler's own go to inference_logprobs),
        reference log-probs, and sampling-time values for critics."""
        mask = rollout.loss_mask
        old = self._old_stats(self.state.params, rollout.tokens)
        ref_logprobs = self._ref_stats(self.ref_params, rollout.tokens).logprobs
        if self.prev_ref_params is not None:
            previous = self._ref_stats(self.prev_ref_params, rollout.tokens).logprobs
            ref_logprobs = self.algo.reference_logprobs(ref_logprobs, previous, self.cfg)
        extra = {"old_values": jnp.where(mask, old.values, 0.0)} if old.values is not None else {}
        if old.topk_logprobs is not None:
            extra["old_topk_logprobs"] = old.topk_logprobs
        if "segment_ids" in self.algo.required(self.cfg):
            if self._sentence_ends is None:
                self._sentence_ends = sentence_end_ids(self.tokenizer, self.model_cfg.vocab_size)
            extra["segment_ids"] = jnp.asarray(sentence_segment_ids(np.asarray(rollout.tokens), self._sentence_ends))
        return host_readable(rollout.replace(
            inference_logprobs=rollout.behaviour_logprobs,
            behaviour_logprobs=jnp.where(mask, old.logprobs, 0.0),
            ref_logprobs=jnp.where(mask, ref_logprobs, 0.0),
            policy_version=jnp.full((rollout.batch_size,), step, jnp.int32),
            **extra,
        ))

    def _step_metrics(self, rollout, adv, update_metrics, sampled_tokens, t_sample, t_update) -> dict[str, float]:
        mask = np.asarray(ops.weighted_mask(rollout)) > 0
        rewards = np.asarray(rollout.rewards)
        components = np.asarray(rollout.reward_components)
        adv_on = np.asarray(adv)[mask] if mask.any() else np.zeros(1)
        updates = {k: float(np.mean([float(m[k]) for m in update_metrics])) for k in update_metrics[-1]}
        return {
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            "accuracy": float(components[:, 0].mean()),
            "response_length": float(np.asarray(rollout.loss_mask).sum(1).mean()),
            # Entropy of the sampling distribution on the trained tokens (the sampler records it).
            "entropy": float(np.asarray(rollout.sample_entropy)[mask].mean()) if mask.any() else 0.0,
            "adv_mean": float(adv_on.mean()), "adv_std": float(adv_on.std()), "adv_abs_max": float(np.abs(adv_on).max()),
            "kept_rows": float(np.asarray(rollout.sample_weight).sum()),
            "tokens_per_s": sampled_tokens / max(t_sample, 1e-9),
            "time_sample_s": t_sample, "time_update_s": t_update,
            **updates,
        }

    # -- warm start and checkpoints -----------------------------------------

    def _sft_key(self) -> str:
        run = self.run
        key = json.dumps([run.task, sorted(run.task_options), run.data_dir, run.model, self.model_cfg.value_head,
                          run.sft_steps, run.sft_batch, run.sft_learning_rate, run.seed, _SFT_VERSION])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _warm_start(self) -> None:
        """Supervised training on the task's reference solutions, cached by its settings."""
        run = self.run
        cache = pathlib.Path(run.cache_dir or os.path.expanduser("~/.cache/rlzoo")) / "sft" / self._sft_key()
        ckpt = Checkpointer(cache, max_to_keep=1)
        if ckpt.latest_step() is not None:
            params, _ = ckpt.restore(self.state.params)
            self.log(f"warm start: reusing cached SFT weights from {cache}")
        else:
            params = self._train_sft()
            ckpt.save(run.sft_steps, params, {"steps": run.sft_steps})
            self.log(f"warm start: {run.sft_steps} SFT steps cached in {cache}")
        ckpt.close()
        self.state = self.state.replace(params=params, opt_state=jax.jit(self.optimizer.init)(params))
        self._reset_reference(params)

    def _reset_reference(self, params) -> None:
        """The frozen reference (and, for moving-reference methods, the
        previous iterate) start as a copy of `params`."""
        self.ref_params = jax.tree.map(jnp.copy, params)
        self.prev_ref_params = self.ref_params if self.algo.reference_logprobs is not None else None

    def _train_sft(self):
        run = self.run
        optimizer = make_optimizer(run.sft_learning_rate, 1.0, warmup_steps=min(20, run.sft_steps // 10))
        update = jax.jit(make_update(self.graphdef, nll_loss, optimizer), donate_argnums=0)
        # A state of its own: the update donates its input buffers.
        state = jax.tree.map(jnp.copy, self.state).replace(opt_state=jax.jit(optimizer.init)(self.state.params))
        rng = np.random.default_rng([run.seed, 2**31 - 1])
        length = self._sft_length()
        progress = _Progress(run.sft_steps, 0, enabled=run.progress and self.primary, label="SFT")
        for i in range(run.sft_steps):
            batch = shard_batch(sft_batch(self.task, self.tokenizer, self.chat, rng, run.sft_batch, length), self.mesh)
            state, metrics = update(state, batch, jnp.zeros(batch.tokens.shape, jnp.float32))
            if (i + 1) % 25 == 0 or i + 1 == run.sft_steps:
                progress.update(i + 1, {"nll": float(metrics["nll"])})
        progress.close()
        return state.params

    def _sft_length(self) -> int:
        probe = self.task.train_examples(np.random.default_rng(0), 64)
        longest = max(len(encode_prompt(self.tokenizer, ex.prompt, self.chat)) + len(self.tokenizer.encode(ex.solution)) + 1 for ex in probe)
        return 1 << math.ceil(math.log2(longest + 4))

    def _saved_state(self) -> dict[str, Any]:
        saved = {"train": self.state, "ref_params": self.ref_params}
        if self.prev_ref_params is not None:
            saved["prev_ref_params"] = self.prev_ref_params
        return saved

    def _on_mesh(self, tree):
        """Replicate over the mesh every leaf that is not already laid out on it
        (scalars, RNG, algorithm state), so jitted steps see one device set."""
        devices = set(self.mesh.devices.flat)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

        def place(x):
            if isinstance(x, jax.Array) and x.sharding.device_set == devices:
                return x
            return jax.device_put(x, replicated)

        return jax.tree.map(place, tree)

    def _restore(self, ckpt: Checkpointer) -> int:
        saved, meta = ckpt.restore(self._saved_state())
        self.state, self.ref_params = saved["train"], saved["ref_params"]
        self.prev_ref_params = saved.get("prev_ref_params")
        return int(meta["step"])

    def _meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step, "run": dataclasses.asdict(self.run), "algo_config": dataclasses.asdict(self.cfg),
            "model_config": dataclasses.asdict(self.model_cfg),
            "batch": {"prompts_per_step": self.run.prompts_per_step, "completions_per_step": self.run.completions_per_step},
        }


_SFT_VERSION = 1
"""Bump when the warm start's recipe changes, so cached weights are not reused."""


class _Progress:
    """A rich progress bar with the latest key metrics (a no-op when disabled)."""

    KEYS = ("reward_mean", "accuracy", "eval_accuracy", "kl", "nll")

    def __init__(self, total: int, start: int, enabled: bool = True, label: str = "RL"):
        self._bar = None
        if enabled and total > start:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            )
            self._task = self._bar.add_task(label, total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if self._bar is not None:
            info = "  ".join(f"{k} {metrics[k]:.3f}" for k in self.KEYS if k in metrics)
            self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
