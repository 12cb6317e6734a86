"""The outer loop. One RL step, top to bottom:

    prompts    experience.prompts.prompt_batches      which prompts (a stream per step)
    generate   experience.generation.generate         K completions per prompt
    score      experience.scoring.score               rewards, components, prompt/answer ids
    refill     experience.filtering.collect           more prompts while the group filter wants them
    forwards   experience.forwards.with_logprobs      behaviour / reference log-probs (+ values, top-k)
    segments   experience.segments                    sentence ids, when the algorithm reads them
    prepare    Algorithm.prepare                      the algorithm's row transform (e.g. pairs)
    filter     experience.row_transforms.weigh_out_rejected  rejected groups weigh 0
    targets    Algorithm.advantages                   advantages / per-row targets, algorithm state
    update     experience.handoff.minibatches -> update.make_update   epochs x minibatches, sharded
    hooks      Algorithm.post_update, reference refresh
    metrics    step_metrics -> MetricsWriter; checkpoints every --checkpoint-every steps

The trainer acts only on what the `Algorithm` record declares; it never
reads an algorithm's Config by attribute name.

Batch sizes are stated in both units: `prompts_per_step` prompts, each with
`samples_per_prompt` (K) completions, are `prompts_per_step · K` rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlzoo import ops
from rlzoo.checkpoint import Checkpointer
from rlzoo.experience import filtering, forwards as fwd, handoff, offline, prompts, row_transforms, scoring, segments
from rlzoo.experience.generation import SamplingSettings, generate
from rlzoo import metrics as metrics_log
from rlzoo.metrics import MetricsWriter, plot_run
from rlzoo.registry import Algorithm, get_algorithm
from rlzoo.rollout import Rollout
from rlzoo.sampling import Sampler
from rlzoo.sharding import host_readable, initialize_distributed, is_primary, make_mesh
from rlzoo.tasks import Example, Task
from rlzoo.train.config import RESUMABLE_CHANGES, RunConfig
from rlzoo.train.interrupts import NO_GUARD, AbortedWithoutSaving, InterruptGuard, TrainingInterrupted
from rlzoo.train.evaluate import evaluate
from rlzoo.train.progress import Progress
from rlzoo.train.setup import enable_compilation_cache, load_policy, make_task
from rlzoo.train.sft import cached_sft
from rlzoo.update import TrainState, algorithm_loss, make_optimizer, make_update, policy_stats_fn


class Trainer:
    """One run: `Trainer(run, algo_cfg).train()` returns the summary dict."""

    def __init__(self, run: RunConfig, algo_cfg: Any = None, *, log: Callable[[str], None] = print,
                 task: Task | None = None):
        """`task`: a Task object to train on instead of the one `run.task`
        names (any object with the `rlzoo.tasks.Task` methods)."""
        initialize_distributed(run.coordinator_address, run.num_processes, run.process_id)
        enable_compilation_cache(run.resolved_cache_dir())
        self.run = run
        self.primary = is_primary()  # the one process that writes run files and logs
        self.log = log if self.primary else lambda message: None
        self.algo: Algorithm = get_algorithm(run.algo, advantage=run.advantage)
        self.run_dir = run.resolved_run_dir()
        if run.run_dir is None and not run.resume:
            # The default directory of an earlier run is kept: a new one gets the next free name.
            default, self.run_dir = self.run_dir, next(d for d in _candidates(self.run_dir) if not _holds_checkpoints(d))
            if self.run_dir != default:
                self.log(f"{default} holds an earlier run (kept); this run writes to {self.run_dir}")
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(f"--run-dir {self.run_dir} is a file; pass a directory")
        if run.resume and not _holds_checkpoints(self.run_dir):
            raise ValueError(f"--resume: no checkpoint in {self.run_dir}; drop --resume to start a fresh run")
        self.cfg = algo_cfg if algo_cfg is not None else self.algo.Config()
        self.outputs = self.algo.policy_outputs(self.cfg)
        if task is not None and not isinstance(task, Task):
            raise TypeError(f"task must implement rlzoo.tasks.Task (train_examples, eval_examples, reward, answer); "
                            f"got {type(task).__name__}")
        self.task = task if task is not None else make_task(run.task, dict(run.task_options), run.data_dir)
        if self.algo.pairwise and run.samples_per_prompt < 2:
            raise ValueError(f"{self.algo.name} is pairwise: --samples-per-prompt must be >= 2")
        if run.prompts_per_step % run.minibatches:
            raise ValueError(f"--minibatches {run.minibatches} must divide --prompts-per-step {run.prompts_per_step}")
        self.mesh = make_mesh(run.mesh_data, run.mesh_fsdp, run.mesh_tensor)
        model, self.model_cfg, self.tokenizer, self.chat = load_policy(
            run.model, seed=run.seed, mesh=self.mesh, value_head="values" in self.outputs
        )
        self.graphdef, params = nnx.split(model)
        if run.preference_data is None:
            self._check_lengths()
        elif run.preference_max_length > self.model_cfg.max_seq_len:
            raise ValueError(f"--preference-max-length {run.preference_max_length} exceeds the model's context "
                             f"of {self.model_cfg.max_seq_len} tokens")
        self.sampler = Sampler()
        self.sampling = SamplingSettings(run.max_new_tokens, run.temperature, run.top_k, run.top_p, run.stop_at_eos)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = make_optimizer(run.learning_rate, run.max_grad_norm or None)
        self.state = self._on_mesh(TrainState(
            params=params,
            opt_state=jax.jit(self.optimizer.init)(params),
            algo_state=self.algo.init_state(self.cfg),
            step=jnp.zeros((), jnp.int32),
            rng=jax.random.key_data(jax.random.key(run.seed)),
        ))
        self._reset_reference(params)
        self._sentence_ends = None
        self.pairs = None
        if run.preference_data is not None:
            if not self.algo.pairwise:
                raise ValueError(f"--preference-data needs a pairwise algorithm; {self.algo.name} is not")
            self.pairs = offline.load_pairs(run.preference_data, self.tokenizer, run.preference_max_length)
            offline.step_pairs(self.pairs, run.seed, 0, run.prompts_per_step)  # too few pairs: an error now
        self._guard = NO_GUARD
        self.completed_steps: int | None = None
        """Steps whose update has been applied (set inside the update's critical section)."""
        self.unwritten_metrics: dict[str, float] | None = None
        self._compile()

    def _check_lengths(self, sample: int = 64) -> None:
        """Refuse a generation budget the model's context cannot hold, and
        warn when reference solutions need more tokens than the budget (their
        completions would be cut and score 0), from measured lengths."""
        run, context = self.run, self.model_cfg.max_seq_len
        examples = self.task.train_examples(np.random.default_rng(run.seed), sample) + self.task.eval_examples()[:sample]
        longest_prompt = max(len(prompts.encode_prompt(self.tokenizer, e.prompt, self.chat)) for e in examples)
        if longest_prompt + run.max_new_tokens > context:
            raise ValueError(
                f"--max-new-tokens {run.max_new_tokens} plus the longest prompt ({longest_prompt} tokens) exceeds "
                f"the model's context of {context} tokens; use --max-new-tokens {max(context - longest_prompt, 1)} or less"
            )
        needed = sorted(len(self.tokenizer.encode(e.solution)) + 1 for e in examples)  # + EOS
        too_long = sum(n > run.max_new_tokens for n in needed)
        if too_long:
            self.log(
                f"warning: {too_long} of {len(needed)} sampled reference solutions need more than --max-new-tokens "
                f"{run.max_new_tokens} tokens (median {needed[len(needed) // 2]}, longest {needed[-1]}, with EOS); "
                f"their completions will be cut off and score 0. Use --max-new-tokens {needed[-1]}"
            )

    def _compile(self) -> None:
        temperature = max(self.run.temperature, 1e-6)
        required = self.algo.required(self.cfg)
        topk = self.algo.topk_size(self.cfg)
        old_outputs = frozenset({"values"} & self.outputs) | (
            {"topk_logprobs"} if "old_topk_logprobs" in required else frozenset()
        )
        run = self.run
        # Exactly on-policy: one pass over a batch just sampled with untruncated
        # sampling, and nothing reads what only the recompute provides.
        self.on_policy = (
            run.epochs == 1 and run.minibatches == 1 and self.pairs is None and run.top_k == 0
            and run.top_p == 1.0 and run.temperature > 0
            and not {"old_values", "old_topk_logprobs", "inference_logprobs"} & required
        )
        logprobs_only = jax.jit(policy_stats_fn(self.graphdef, frozenset(), temperature))
        behaviour = None
        if not self.on_policy:
            behaviour = jax.jit(policy_stats_fn(self.graphdef, old_outputs, temperature, topk)) if old_outputs else logprobs_only
        moving = None
        if self.algo.reference_logprobs is not None:
            moving = lambda latest, previous: self.algo.reference_logprobs(latest, previous, self.cfg)  # noqa: E731
        reads_reference = "ref_logprobs" in required or moving is not None
        self.forwards = fwd.Forwards(behaviour=behaviour, reference=logprobs_only if reads_reference else None,
                                     moving_reference=moving)
        update = make_update(
            self.graphdef, algorithm_loss(self.algo, self.cfg), self.optimizer, outputs=self.outputs, topk=topk,
            microbatches=run.microbatches, temperature=temperature, reduction=self.algo.reduction,
            on_policy=self.on_policy,
        )
        self._update = jax.jit(update, donate_argnums=0)
        self._advantages = jax.jit(lambda r, s: self.algo.advantages(r, self.cfg, s))
        self._filter = None
        if self.algo.group_filter is not None:
            self._filter = lambda rollout: self.algo.group_filter(rollout, self.cfg)

    def model(self, params=None):
        return nnx.merge(self.graphdef, self.state.params if params is None else params)

    # -- one step -----------------------------------------------------------

    def sample(self, examples: list[Example], num_samples: int, rng: jax.Array) -> Rollout:
        """Generate and score `num_samples` completions of each example."""
        rollout, completions = generate(self.sampler, self.model(), self.tokenizer, self.chat, examples,
                                        num_samples, rng, self.sampling)
        return scoring.score(self.task, rollout, completions, examples)

    def collect(self, step: int, key: jax.Array) -> tuple[Rollout, int, int]:
        """(scored rollout of prompts_per_step groups, sampled tokens, sampling rounds)."""
        run, sampled = self.run, []
        if self.pairs is not None:
            return offline.step_pairs(self.pairs, run.seed, step, run.prompts_per_step), 0, 1

        def batches():
            for round_, examples in enumerate(prompts.prompt_batches(self.task, run.seed, step, run.prompts_per_step)):
                rollout = self.sample(examples, run.samples_per_prompt, key if not round_ else jax.random.fold_in(key, round_))
                sampled.append(int(np.asarray(rollout.loss_mask).sum()))
                yield rollout

        keep = self._filter or (lambda r: None)
        rollout, rounds = filtering.collect(batches(), keep, run.prompts_per_step, run.max_sampling_rounds)
        return rollout, sum(sampled), rounds

    def with_logprobs(self, rollout: Rollout, step: int) -> Rollout:
        """The forwards stage, plus sentence segment ids when the algorithm reads them."""
        rollout = fwd.with_logprobs(rollout, self.forwards, self.state.params, self.ref_params, self.prev_ref_params, step)
        if "segment_ids" in self.algo.required(self.cfg):
            if self._sentence_ends is None:
                self._sentence_ends = segments.sentence_end_ids(self.tokenizer, self.model_cfg.vocab_size)
            ids = segments.sentence_segment_ids(np.asarray(rollout.tokens), self._sentence_ends)
            rollout = rollout.replace(segment_ids=jnp.asarray(ids))
        return rollout

    def step(self, step: int) -> dict[str, float]:
        """One RL step; returns its metrics. Everything up to the advantages
        only reads the train state; from there to the end the step is a
        critical section (a Ctrl-C waits for it, see `interrupts`)."""
        run = self.run
        key = jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), step)
        sample_key, shuffle_key = jax.random.split(key)
        t0 = time.time()
        rollout, sampled_tokens, rounds = self.collect(step, sample_key)
        t_collected = time.time()
        rollout = self.with_logprobs(rollout, step)
        t1 = time.time()
        if self.algo.prepare is not None:
            rollout = self.algo.prepare(rollout, self.cfg, self.state.algo_state)
        self.algo.validate(rollout, self.cfg)  # a field the algorithm reads but nobody filled: a clear error
        if self._filter is not None:
            keep = self._filter(rollout)
            if keep is not None:
                rollout = row_transforms.weigh_out_rejected(rollout, keep)
        with self._guard.critical():
            targets, algo_state = self._advantages(rollout, self.state.algo_state)
            targets = host_readable(targets)
            self.state = self.state.replace(algo_state=algo_state)
            update_metrics = []
            for minibatch, minibatch_targets in handoff.minibatches(
                rollout, targets, epochs=run.epochs, count=run.minibatches, key=shuffle_key, mesh=self.mesh
            ):
                self.state, metrics = self._update(self.state, minibatch, minibatch_targets)
                update_metrics.append(host_readable(metrics))
            if self.algo.post_update is not None:
                self.state = self.state.replace(
                    algo_state=self.algo.post_update(self.state.algo_state, update_metrics[-1], self.cfg)
                )
            if run.ref_refresh_every and (step + 1) % run.ref_refresh_every == 0:
                if self.prev_ref_params is not None:
                    self.prev_ref_params = self.ref_params
                self.ref_params = jax.tree.map(jnp.copy, self.state.params)
            jax.block_until_ready(self.state)
            times = {"time_sample_s": t_collected - t0, "time_forwards_s": t1 - t_collected,
                     "time_update_s": time.time() - t1}
            metrics = step_metrics(rollout, targets, update_metrics, sampled_tokens, times) | {
                "sampling_rounds": float(rounds),
            }
            # Set together with the update, so an interrupt at any later point
            # saves (and logs) exactly the steps applied.
            self.completed_steps, self.unwritten_metrics = step + 1, metrics
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy and mean reward on the held-out prompts."""
        return evaluate(self.task, self.sampler, self.model(), self.tokenizer, self.chat, self.run.eval_size, self.sampling)

    # -- the loop -------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Run to `run.steps` and return the summary. Ctrl-C saves the updates
        applied so far and raises `TrainingInterrupted`; a non-finite update
        raises `NonFiniteTraining` with the newest checkpoint left intact."""
        run = self.run
        ckpt = Checkpointer(self.run_dir / "checkpoints", primary=self.primary)
        writer = progress = None
        self.completed_steps = self.unwritten_metrics = None
        try:
            with InterruptGuard(self.log) as self._guard:
                self.completed_steps = start = self._begin(ckpt)
                writer = MetricsWriter(self.run_dir, tensorboard=run.tensorboard, append=start > 0, enabled=self.primary)
                started = time.time()
                first_eval = last_eval = None
                if start == 0:
                    first_eval = last_eval = writer.write(0, self.evaluate())
                    self.log(f"step 0: held-out accuracy {first_eval['eval_accuracy']:.3f}")
                progress = Progress(run.steps, start, enabled=run.progress and self.primary)
                skipped = 0
                for step in range(start, run.steps):
                    metrics = self.step(step)
                    done = step + 1
                    if metrics["update_skipped"]:  # the mean over minibatches: > 0 when any was skipped
                        skipped += 1
                        self._check_skip_budget(done, metrics, skipped, ckpt)
                    if run.eval_every and (done % run.eval_every == 0 or done == run.steps):
                        last_eval = self.evaluate()
                        metrics = metrics | last_eval
                    with self._guard.critical():
                        writer.write(done, metrics)
                        self.unwritten_metrics = None
                        progress.update(done, metrics)
                        if run.checkpoint_every and done % run.checkpoint_every == 0:
                            ckpt.save(done, self.saved_state(), self.meta(done))
                with self._guard.critical():
                    if ckpt.latest_step() != run.steps:
                        ckpt.save(run.steps, self.saved_state(), self.meta(run.steps))
        except AbortedWithoutSaving:
            raise TrainingInterrupted(
                f"stopped without saving; the newest checkpoint is step {ckpt.latest_step()} in {self.run_dir}"
            ) from None
        except KeyboardInterrupt:
            done = self.completed_steps
            if done is None:
                raise TrainingInterrupted(f"interrupted before training started; {self.run_dir} is unchanged") from None
            with InterruptGuard(self.log) as self._guard, self._guard.critical():
                if self.unwritten_metrics is not None and writer is not None:
                    writer.write(done, self.unwritten_metrics)
                if ckpt.latest_step() != done:
                    ckpt.save(done, self.saved_state(), self.meta(done))
            raise TrainingInterrupted(
                f"interrupted: saved step {done} in {self.run_dir}; continue with --resume"
            ) from None
        finally:
            self._guard = NO_GUARD
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
            ckpt.close()
        plot = self.run_dir / "metrics.png"
        summary = {
            "algo": self.algo.name, "task": run.task, "model": run.model, "steps": run.steps,
            "wall_time_s": round(time.time() - started, 2),
            "start_accuracy": first_eval["eval_accuracy"] if first_eval else None,
            "final_accuracy": last_eval["eval_accuracy"] if last_eval else None,
            "run_dir": str(self.run_dir), "plot": str(plot),
        }
        if self.primary:
            plot_run(self.run_dir / "metrics.jsonl", plot, f"{self.algo.name} on {run.task}")
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _check_skip_budget(self, step: int, metrics: dict[str, float], skipped: int, ckpt: Checkpointer) -> None:
        """Stop on a non-finite update once --skip-nonfinite-steps is used up."""
        if skipped <= self.run.skip_nonfinite_steps:
            self.log(f"step {step}: skipped a non-finite update ({skipped} of --skip-nonfinite-steps "
                     f"{self.run.skip_nonfinite_steps})")
            return
        what = next((name for name in ("loss", "grad_norm") if not np.isfinite(metrics.get(name, 0.0))), "parameters")
        raise NonFiniteTraining(
            f"step {step}: non-finite {what} ({metrics.get(what, 'nan')}); the update was not applied and nothing "
            f"of this step was written. The newest checkpoint (step {ckpt.latest_step()}) is intact. Lower "
            f"--learning-rate, check the rewards, or pass --skip-nonfinite-steps N to skip such batches"
        )

    def _begin(self, ckpt: Checkpointer) -> int:
        """The first step of this invocation: a fresh run (warm start) or,
        with --resume, the newest intact checkpoint, with the run directory
        checked and its config history and metrics brought in line."""
        run = self.run
        if run.resume:
            meta = self.restore(ckpt)
            start = int(meta["step"])
            self._check_resumed_config(meta)
            if self.primary:
                metrics_log.truncate_after(self.run_dir / "metrics.jsonl", start)
            self.log(f"resumed from step {start} in {self.run_dir}")
        else:
            if ckpt.steps():
                raise ValueError(
                    f"{self.run_dir} already holds a run (checkpoint at step {ckpt.latest_step()}): pass --resume "
                    "to continue it, or choose another --run-dir"
                )
            start = 0
            if run.sft_steps:
                self.warm_start()
        if self.primary:
            record = self.meta(start)
            (self.run_dir / "config.json").write_text(json.dumps(record, indent=2, default=str))
            with (self.run_dir / "config_history.jsonl").open("a") as history:
                history.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}, default=str) + "\n")
        return start

    def _check_resumed_config(self, meta: dict[str, Any]) -> None:
        """Refuse settings that differ from the checkpoint's, unless allowed."""
        now = self.meta(int(meta["step"]))
        changes = [
            f"--{name.replace('_', '-')} {before!r} -> {after!r}"
            for section, exempt in (("run", RESUMABLE_CHANGES), ("algo_config", frozenset()))
            for name, before, after in _differences(meta.get(section, {}), now[section], exempt)
        ]
        if not changes:
            return
        if not self.run.allow_config_change:
            raise ValueError(
                f"--resume with settings that differ from the checkpoint's ({'; '.join(changes)}); "
                "pass --allow-config-change to accept them"
            )
        self.log(f"resuming with changed settings: {'; '.join(changes)}")

    # -- warm start, reference and checkpoints --------------------------------

    def warm_start(self) -> None:
        """Supervised training on the task's reference solutions (cached by its
        settings); resets the optimiser and the reference to the result."""
        params = cached_sft(self.graphdef, self.state, self.run, self.task, self.tokenizer, self.chat, self.mesh,
                            self.model_cfg.value_head, log=self.log, progress=self.run.progress and self.primary)
        self.state = self.state.replace(params=params, opt_state=jax.jit(self.optimizer.init)(params))
        self._reset_reference(params)

    def _reset_reference(self, params) -> None:
        """The frozen reference (and, for moving-reference methods, the
        previous iterate) start as a copy of `params`."""
        self.ref_params = jax.tree.map(jnp.copy, params)
        self.prev_ref_params = self.ref_params if self.algo.reference_logprobs is not None else None

    def saved_state(self) -> dict[str, Any]:
        """What a checkpoint holds: the train state and the reference iterates."""
        saved = {"train": self.state, "ref_params": self.ref_params}
        if self.prev_ref_params is not None:
            saved["prev_ref_params"] = self.prev_ref_params
        return saved

    def restore(self, ckpt: Checkpointer) -> dict[str, Any]:
        """Load the newest intact checkpoint of `ckpt` (falling back past
        damaged ones, with a warning); returns its meta record."""
        saved, meta = ckpt.restore(self.saved_state(), warn=self.log)
        self.state, self.ref_params = saved["train"], saved["ref_params"]
        self.prev_ref_params = saved.get("prev_ref_params")
        return meta

    def meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step, "run": dataclasses.asdict(self.run), "algo_config": dataclasses.asdict(self.cfg),
            "model_config": dataclasses.asdict(self.model_cfg),
            "batch": {"prompts_per_step": self.run.prompts_per_step, "completions_per_step": self.run.completions_per_step},
        }

    def _on_mesh(self, tree):
        """Replicate over the mesh every leaf that is not already laid out on it
        (scalars, RNG, algorithm state). A leaf on the right devices with
        another kind of sharding (a single-device one, on a 1-device mesh)
        is placed too: the first update would return it as a NamedSharding
        and so recompile every jitted function of the second step."""
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

        def place(x):
            if isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding) \
                    and x.sharding.mesh == self.mesh:
                return x
            return jax.device_put(x, replicated)

        return jax.tree.map(place, tree)


def _holds_checkpoints(run_dir: pathlib.Path) -> bool:
    return any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*"))


def _candidates(run_dir: pathlib.Path):
    yield run_dir
    yield from (run_dir.with_name(f"{run_dir.name}-{n}") for n in itertools.count(2))


class NonFiniteTraining(RuntimeError):
    """A non-finite update beyond --skip-nonfinite-steps: the run stopped."""


def _differences(before: dict[str, Any], after: dict[str, Any], exempt: frozenset[str]):
    """(name, before, after) of settings that differ, compared as JSON."""
    as_json = lambda value: json.loads(json.dumps(value, default=str))  # noqa: E731  (tuples vs lists)
    for name in sorted(set(before) | set(after)):
        if name not in exempt and as_json(before.get(name)) != as_json(after.get(name)):
            yield name, before.get(name), after.get(name)


def logged_advantage(targets: Any) -> jax.Array:
    """The [B, T] advantage to log: the targets themselves, or their "advantages" entry."""
    if isinstance(targets, dict):
        return targets.get("advantages")
    return targets


def step_metrics(rollout: Rollout, targets, update_metrics, sampled_tokens, times: dict[str, float]) -> dict[str, float]:
    """The per-step record: rewards, lengths, entropy, advantages, kept rows,
    speed, loss metrics. `times`: seconds in sampling (with scoring and
    refills), the forwards stage, and the update (advantages to hooks,
    blocked on the result)."""
    mask = np.asarray(ops.weighted_mask(rollout)) > 0
    rewards = np.asarray(rollout.rewards)
    components = np.asarray(rollout.reward_components if rollout.reward_components is not None else rollout.rewards[:, None])
    adv = logged_advantage(targets)
    adv_on = np.asarray(adv)[mask] if adv is not None and mask.any() else np.zeros(1)
    updates = {k: float(np.mean([float(m[k]) for m in update_metrics])) for k in update_metrics[-1]}
    return {
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
        "accuracy": float(components[:, 0].mean()),
        "response_length": float(np.asarray(rollout.loss_mask).sum(1).mean()),
        # Entropy of the sampling distribution on the trained tokens (the sampler records it).
        "entropy": float(np.asarray(rollout.sample_entropy)[mask].mean()) if mask.any() and rollout.sample_entropy is not None else 0.0,
        "adv_mean": float(adv_on.mean()), "adv_std": float(adv_on.std()), "adv_abs_max": float(np.abs(adv_on).max()),
        "kept_rows": float(np.asarray(rollout.sample_weight).sum()),
        "tokens_per_s": sampled_tokens / max(times["time_sample_s"], 1e-9),
        **times,
        **updates,
    }
