"""One GRPO step, end to end: rlzoo's `Trainer.step` against TRL's
`GRPOTrainer` (PyTorch, CPU) on the same random Llama weights, prompts of the
same length and the same batch, alternating, in one process (issue #12,
item 6). The machine is shared and noisy: read the ratios, not the seconds.

Workload (per step): 8 prompts x 4 completions, every prompt exactly 32
tokens, exactly 64 generated tokens (no EOS stop), temperature 1, no top-k /
top-p, U[0, 1) rewards, beta (KL) 0, one AdamW step (lr 1e-5, no clipping),
1 epoch, 1 minibatch. Model: Llama, vocab 1024, hidden 256, 4 layers, 8
heads, 4 KV heads, head_dim 32, MLP 704, RoPE theta 1e4, RMSNorm eps 1e-5,
untied embeddings, float32, weights N(0, 0.02).

    python benchmarks/bench_grpo_step.py --threads 1                        # results/: 3 repeats x (1 warm-up + 10 steps)
    python benchmarks/bench_grpo_step.py --threads 1 --repeats 1 --steps 3  # quick
    python benchmarks/bench_grpo_step.py --threads 1 --scaling              # completion 64..512, rows 32..256 (slow)

--threads 1 (one thread each, process pinned to one CPU) is what results/
holds: on a busy 2-core machine, two-thread runs of either framework swing
by up to 10x with the other users' load. Steps alternate one by one (an rlzoo
step after each TRL step), so both see the same load.

Both load one Hugging Face checkpoint directory written here (random
weights from transformers' initialiser, std 0.02, plus a 1025-entry
word-level tokenizer whose EOS, id 1024, lies outside the model's 1024
logits, so no completion can end early in either implementation).
rlzoo's step is split by wrapping the trainer's own stages (each wrapper
blocks on its outputs before reading the clock): generate (the sampler),
score (decode + reward), forwards (`with_logprobs`), update (the jitted
update) and other (prompt draw, advantages, hand-off, metrics). TRL's step
is split the same way: generate (`model.generate`), score (the reward
function), forwards (the rest of `_generate_and_score_completions`:
tokenising, decoding, advantages and any old / reference log-probs), update
(loss forward + backward + optimizer step) and other. Compilations are
counted with jax.monitoring (lowerings to MLIR, and XLA backend compiles).

Writes benchmarks/results/grpo_step.json and grpo_step.png (--scaling:
grpo_step_scaling.json / .png unless --out says otherwise).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"

MODEL = dict(vocab_size=1024, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
             head_dim=32, intermediate_size=704, rope_theta=10_000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
INIT_STD = 0.02
EOS_ID = MODEL["vocab_size"]  # the tokenizer's extra entry: never among the model's logits
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the prompt text itself, nothing added
PARTS = ("generate", "score", "forwards", "update", "other")
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TASK_NAME = "bench-random-reward"
FIRST_STEP_NOTE = (
    "repeat 1 is a cold start of a fresh process (empty jax disk cache); later repeats get a fresh disk cache too "
    "(--disk-cache cold) but reuse jax's in-process caches, so they lower only the programs whose traces changed"
)
WORKAROUNDS = [
    "TRL: no switch turns EOS stopping off; the shared tokenizer's EOS (id 1024) lies outside the model's 1024 "
    "logits, so it is never sampled (TRL's min_new_tokens would index that logit, so it is not used); rlzoo also "
    "runs with stop_at_eos=False",
    "rlzoo: a Hugging Face directory is always prompted through its chat template; the template here returns the "
    "prompt text unchanged",
    "rlzoo: per-stage times are taken by wrapping Trainer.sampler / sample / with_logprobs / _update (blocking "
    "on their outputs), finer than the step's own time_sample_s / time_forwards_s / time_update_s",
]


@dataclasses.dataclass(frozen=True)
class Workload:
    prompts: int = 8
    samples: int = 4
    prompt_len: int = 32
    new_tokens: int = 64
    learning_rate: float = 1e-5
    temperature: float = 1.0

    @property
    def rows(self) -> int:
        return self.prompts * self.samples


# --------------------------------------------------------------------------
# The shared checkpoint: random weights + a word-level tokenizer
# --------------------------------------------------------------------------

def word(i: int) -> str:
    return f"t{i}"


def write_checkpoint(path: pathlib.Path, seed: int, max_positions: int) -> None:
    """config.json + model.safetensors (transformers' N(0, 0.02) initialiser)
    and tokenizer.json / tokenizer_config.json: ids 0..1023 are the words
    t0..t1023, id 1024 is <eos> (also the pad token), outside the model's vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it warns that eos_token_id lies outside the vocabulary: that is the point
    config = LlamaConfig(**MODEL, initializer_range=INIT_STD, max_position_embeddings=max_positions,
                         bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=None, attention_bias=False,
                         mlp_bias=False, hidden_act="silu")
    hf_logging.set_verbosity(verbosity)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(path)
    vocab = {word(i): i for i in range(MODEL["vocab_size"])} | {"<eos>": EOS_ID}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<eos>",
                                        chat_template=CHAT_TEMPLATE)
    tokenizer.save_pretrained(path)


def prompt_text(rng: np.random.Generator, length: int) -> str:
    return " ".join(word(int(i)) for i in rng.integers(0, MODEL["vocab_size"], length))


# --------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------

class Clock:
    """Seconds per part, accumulated within one step."""

    def __init__(self):
        self.parts: dict[str, float] = collections.defaultdict(float)

    def reset(self) -> None:
        self.parts.clear()

    @contextlib.contextmanager
    def measure(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[part] += time.perf_counter() - start


class CompileCounter:
    """Counts jax's lowering and XLA-compile events and sums the seconds of
    tracing, lowering and compiling (registered once per process)."""

    def __init__(self):
        import jax

        self.counts: collections.Counter = collections.Counter()
        self.seconds: collections.Counter = collections.Counter()
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, *args, **kwargs) -> None:
        if event in (TRACE_EVENT, LOWER_EVENT, COMPILE_EVENT):
            self.counts[event] += 1
            self.seconds[event] += duration

    def snapshot(self) -> tuple[int, int, float, float, float]:
        return (self.counts[LOWER_EVENT], self.counts[COMPILE_EVENT], self.seconds[TRACE_EVENT],
                self.seconds[LOWER_EVENT], self.seconds[COMPILE_EVENT])


def _blocked(x):
    import jax

    return jax.block_until_ready(x)


# --------------------------------------------------------------------------
# rlzoo
# --------------------------------------------------------------------------

class RandomRewardTask:
    """rlzoo Task: prompts of exactly `prompt_len` words, reward U[0, 1)."""

    name = TASK_NAME
    reward_names = ("random",)

    def __init__(self, prompt_len: int, seed: int):
        from rlzoo.tasks import Example

        self._example = Example
        self.prompt_len = prompt_len
        self.rng = np.random.default_rng([seed, 1])
        self.calls = 0
        self._eval = [Example(prompt_text(np.random.default_rng([seed, 2, i]), prompt_len), "", "") for i in range(4)]

    def train_examples(self, rng: np.random.Generator, n: int):
        return [self._example(prompt_text(rng, self.prompt_len), "", "") for _ in range(n)]

    def eval_examples(self):
        return list(self._eval)

    def reward(self, completion: str, example) -> dict[str, float]:
        self.calls += 1
        value = float(self.rng.random())
        return {"reward": value, "random": value}

    def answer(self, completion: str) -> str | None:
        return None


class TimedSampler:
    """The trainer's Sampler, timed, with its outputs blocked on."""

    def __init__(self, inner, clock: Clock):
        self.inner, self.clock = inner, clock

    def __call__(self, *args, **kwargs):
        with self.clock.measure("generate"):
            return _blocked(self.inner(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def rlzoo_trainer(ckpt: str, wl: Workload, seed: int, work: pathlib.Path, clock: Clock, checks: list):
    from rlzoo.registry import get_algorithm
    from rlzoo.train import RunConfig, Trainer

    run = RunConfig(
        algo="grpo", task=TASK_NAME, model=ckpt, steps=1_000_000, prompts_per_step=wl.prompts,
        samples_per_prompt=wl.samples, max_new_tokens=wl.new_tokens, temperature=wl.temperature, top_k=0, top_p=1.0,
        stop_at_eos=False, epochs=1, minibatches=1, microbatches=1, learning_rate=wl.learning_rate, max_grad_norm=0.0,
        sft_steps=0,
        eval_every=0, checkpoint_every=0, tensorboard=False, progress=False, seed=seed,
        run_dir=str(work / "run"), cache_dir=str(work / "cache"),
    )
    cfg = get_algorithm("grpo").Config(kl_coef=0.0)
    task = RandomRewardTask(wl.prompt_len, seed)
    trainer = Trainer(run, cfg, log=lambda _: None, task=task)
    if trainer.task is not task:
        raise RuntimeError("the Trainer did not take the benchmark's task")

    trainer.sampler = TimedSampler(trainer.sampler, clock)
    sample, with_logprobs, update = trainer.sample, trainer.with_logprobs, trainer._update

    def timed_sample(*args, **kwargs):
        with clock.measure("sample"):
            return _blocked(sample(*args, **kwargs))

    def timed_with_logprobs(rollout, step):
        with clock.measure("forwards"):
            out = _blocked(with_logprobs(rollout, step))
        checks.append(check_rollout(out, wl))
        return out

    def timed_update(*args):
        with clock.measure("update"):
            return _blocked(update(*args))

    trainer.sample, trainer.with_logprobs, trainer._update = timed_sample, timed_with_logprobs, timed_update
    return trainer


def check_rollout(rollout, wl: Workload) -> dict:
    """The batch really is the workload: rows, prompt length, 64 generated tokens each, rewards in [0, 1)."""
    tokens = np.asarray(rollout.tokens)
    mask = np.asarray(rollout.loss_mask)
    rewards = np.asarray(rollout.rewards)
    generated = mask.sum(1)
    first = mask.argmax(1)
    problems = []
    if tokens.shape[0] != wl.rows:
        problems.append(f"{tokens.shape[0]} rows, expected {wl.rows}")
    if not (generated == wl.new_tokens).all():
        problems.append(f"generated lengths {sorted(set(generated.tolist()))}, expected {wl.new_tokens}")
    if not (first == wl.prompt_len).all():
        problems.append(f"prompt lengths {sorted(set(first.tolist()))}, expected {wl.prompt_len}")
    if not ((rewards >= 0) & (rewards < 1)).all():
        problems.append("rewards outside [0, 1)")
    if (tokens[mask] >= MODEL["vocab_size"]).any():
        problems.append("generated ids outside the vocabulary")
    if problems:
        raise AssertionError("rlzoo batch is not the workload: " + "; ".join(problems))
    return {"rows": int(tokens.shape[0]), "generated": int(generated[0]), "prompt_len": int(first[0])}


class RlzooRun:
    """One rlzoo Trainer, stepped one step at a time (so its steps can
    alternate with TRL's); each step's parts and compilations are recorded."""

    def __init__(self, ckpt: str, wl: Workload, seed: int, counter: CompileCounter):
        self.clock, self.checks, self.counter, self.records = Clock(), [], counter, []
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="bench-grpo-rlzoo-"))
        start = time.perf_counter()
        self.trainer = rlzoo_trainer(ckpt, wl, seed, self.work, self.clock, self.checks)
        self.setup_s = time.perf_counter() - start
        self.settings = rlzoo_settings(self.trainer)

    def step(self) -> None:
        self.clock.reset()
        before = self.counter.snapshot()
        start, cpu = time.perf_counter(), time.process_time()
        metrics = self.trainer.step(len(self.records))
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = self.counter.snapshot()
        parts = dict(self.clock.parts)
        row = {
            "total": total,
            "cpu_s": cpu,
            "generate": parts.get("generate", 0.0),
            "score": parts.get("sample", 0.0) - parts.get("generate", 0.0),
            "forwards": parts.get("forwards", 0.0),
            "update": parts.get("update", 0.0),
            "lowerings": after[0] - before[0],
            "xla_compiles": after[1] - before[1],
            "trace_s": after[2] - before[2],
            "lower_s": after[3] - before[3],
            "xla_compile_s": after[4] - before[4],
            "logged_time_sample_s": metrics.get("time_sample_s"),
            "logged_time_update_s": metrics.get("time_update_s"),
            "loss": metrics.get("loss"),
        }
        row["other"] = row["total"] - sum(row[p] for p in PARTS[:-1])
        self.records.append(row)

    def close(self) -> dict:
        shutil.rmtree(self.work, ignore_errors=True)
        self.trainer = None
        return {"setup_s": self.setup_s, "steps": self.records, "settings": self.settings,
                "batch_check": self.checks[-1]}


def rlzoo_settings(trainer) -> dict:
    """What the Trainer will actually do, read back from it."""
    run, cfg = trainer.run, trainer.cfg
    return {
        "algo": trainer.algo.name, "kl_coef": cfg.kl_coef, "aggregation": cfg.aggregation,
        "on_policy (no behaviour forward)": bool(trainer.on_policy),
        "behaviour_forward": trainer.forwards.behaviour is not None,
        "reference_forward": trainer.forwards.reference is not None,
        "learning_rate": run.learning_rate, "max_grad_norm": run.max_grad_norm, "epochs": run.epochs,
        "minibatches": run.minibatches, "sft_steps": run.sft_steps, "eval_every": run.eval_every,
        "prompts_per_step": run.prompts_per_step, "samples_per_prompt": run.samples_per_prompt,
        "max_new_tokens": run.max_new_tokens, "temperature": run.temperature, "top_k": run.top_k, "top_p": run.top_p,
        "stop_ids": list(getattr(trainer.tokenizer, "stop_ids", (trainer.tokenizer.eos_id,))),
        "model_vocab": trainer.model_cfg.vocab_size, "dtype": trainer.model_cfg.dtype,
        "params": trainer.model_cfg.num_params, "optimizer": "optax adamw b1=0.9 b2=0.99 wd=0 (rlzoo make_optimizer)",
    }


# --------------------------------------------------------------------------
# tunix (its own virtual environment, driven over a pipe)
# --------------------------------------------------------------------------

TUNIX_WORKER = pathlib.Path(__file__).parent / "tunix_worker.py"


class TunixRun:
    """tunix's GRPOLearner in the Python of its own virtual environment
    (benchmarks/tunix_worker.py), one step per `step()`; the worker's parts
    are generate, update and other (its rewards and advantages are in other)."""

    def __init__(self, python: str, ckpt: str, wl: Workload, seed: int, threads: int):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-grpo-tunix-", suffix=".log")
        command = [python, str(TUNIX_WORKER), "--ckpt", ckpt, "--prompts", str(wl.prompts),
                   "--samples", str(wl.samples), "--prompt-len", str(wl.prompt_len),
                   "--new-tokens", str(wl.new_tokens), "--seed", str(seed), "--threads", str(threads)]
        start = time.perf_counter()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        ready = self._read()
        self.setup_s = time.perf_counter() - start
        self.settings = {"tunix": ready["tunix"], "jax": ready["jax"], "notes": ready["notes"],
                         "python": python}
        self.records: list[dict] = []
        self.lengths: set[int] = set()
        self.rows_expected, self.new_tokens = wl.rows, wl.new_tokens

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise RuntimeError(f"the tunix worker stopped (exit code {self.proc.poll()}); its log ends:\n{tail}")
        return json.loads(line)

    def _cpu_s(self) -> float:
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def step(self) -> None:
        cpu = self._cpu_s()
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        row = self._read()
        row["cpu_s"] = self._cpu_s() - cpu
        row["score"] = row["forwards"] = 0.0  # inside the worker's "other"
        self.lengths.update(row.pop("generated"))
        if row["rows"] != self.rows_expected or self.lengths != {self.new_tokens}:
            raise AssertionError(f"tunix batch is not the workload: {row['rows']} rows, lengths {self.lengths}")
        self.records.append(row)

    def close(self) -> dict:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        self.log.close()
        return {"setup_s": self.setup_s, "steps": self.records, "settings": self.settings,
                "batch_check": {"rows": self.rows_expected, "generated": sorted(self.lengths)}}


# --------------------------------------------------------------------------
# TRL
# --------------------------------------------------------------------------

def run_trl(ckpt: str, wl: Workload, warmup: int, steps: int, seed: int,
            after_step: Callable[[int], None] | None = None) -> dict:
    """TRL's GRPOTrainer for warmup + steps steps; `after_step(i)` runs after
    TRL's step i has been timed (the other implementation's turn)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaForCausalLM, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import warnings

    # TRL's own generation wrapper reads transformers' deprecated is_gradient_checkpointing.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    clock = Clock()
    records: list[dict] = []
    checks: list[dict] = []

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            with clock.measure("prepare"):
                return super()._generate_and_score_completions(inputs)

        def training_step(self, *args, **kwargs):
            with clock.measure("training_step"):
                return super().training_step(*args, **kwargs)

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.reset()
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.optimizer_start = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            clock.parts["optimizer"] += time.perf_counter() - self.optimizer_start

        def on_step_end(self, args, state, control, **kwargs):
            total, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu
            p = dict(clock.parts)
            row = {
                "total": total,
                "cpu_s": cpu,
                "generate": p.get("generate", 0.0),
                "score": p.get("reward", 0.0),
                "forwards": p.get("prepare", 0.0) - p.get("generate", 0.0) - p.get("reward", 0.0),
                "update": p.get("training_step", 0.0) - p.get("prepare", 0.0) + p.get("optimizer", 0.0),
            }
            row["other"] = row["total"] - sum(row[k] for k in PARTS[:-1])
            records.append(row)
            if after_step is not None:
                after_step(len(records) - 1)

    reward_rng = np.random.default_rng([seed, 3])

    def random_reward(prompts, completions, completion_ids=None, **kwargs):
        with clock.measure("reward"):
            lengths = sorted({len(c) for c in completion_ids}) if completion_ids is not None else None
            checks.append({"rows": len(completions), "generated": lengths})
            if lengths is not None and lengths != [wl.new_tokens]:
                raise AssertionError(f"TRL completions of {lengths} tokens, expected {wl.new_tokens}")
            if len(completions) != wl.rows:
                raise AssertionError(f"TRL scored {len(completions)} completions, expected {wl.rows}")
            return reward_rng.random(len(completions)).tolist()

    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    data_rng = np.random.default_rng([seed, 4])
    prompts = [prompt_text(data_rng, wl.prompt_len) for _ in range(wl.prompts * (warmup + steps))]
    lengths = {len(tokenizer(p)["input_ids"]) for p in prompts}
    if lengths != {wl.prompt_len}:
        raise AssertionError(f"TRL prompts tokenise to {lengths} tokens, expected {wl.prompt_len}")
    model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    generate = model.generate

    def timed_generate(*args, **kwargs):
        with clock.measure("generate"):
            return generate(*args, **kwargs)

    model.generate = timed_generate
    work = tempfile.mkdtemp(prefix="bench-grpo-trl-")
    try:
        fields = {f.name for f in dataclasses.fields(GRPOConfig)}
        no_remat = {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": False}
        args = GRPOConfig(
            **no_remat, output_dir=work, per_device_train_batch_size=wl.rows, gradient_accumulation_steps=1,
            num_generations=wl.samples, max_completion_length=wl.new_tokens, temperature=wl.temperature,
            top_p=1.0, top_k=0, beta=0.0, num_iterations=1, loss_type="grpo", scale_rewards="group",
            learning_rate=wl.learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            adam_beta1=0.9, adam_beta2=0.99, max_grad_norm=0.0, max_steps=warmup + steps,
            bf16=False, fp16=False, use_cpu=True,
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            log_completions=False, seed=seed, dataloader_num_workers=0,
        )
        start = time.perf_counter()
        trainer = TimedGRPOTrainer(model=model, reward_funcs=random_reward, args=args,
                                   train_dataset=Dataset.from_dict({"prompt": prompts}),
                                   processing_class=tokenizer, callbacks=[StepClock()])
        setup_s = time.perf_counter() - start
        trainer.remove_callback(PrinterCallback)  # its end-of-training metrics dump
        settings = {
            "eos_token_ids": list(trainer.eos_token_ids),
            "generation_config": {k: getattr(trainer.generation_config, k) for k in
                                  ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p")},
            "beta": args.beta, "num_iterations": args.num_iterations, "loss_type": args.loss_type,
            "generation_batch_size": args.generation_batch_size, "steps_per_generation": args.steps_per_generation,
            "learning_rate": args.learning_rate, "max_grad_norm": args.max_grad_norm, "bf16": args.bf16,
            "activation_checkpointing": bool(getattr(args, "activation_checkpointing", args.gradient_checkpointing)),
            "model_activation_checkpointing": bool(getattr(model, "is_activation_checkpointing")
                                                   if hasattr(type(model), "is_activation_checkpointing")
                                                   else getattr(model, "is_gradient_checkpointing", False)),
            "torch_threads": torch.get_num_threads(),
            "optimizer": f"{args.optim} b1={args.adam_beta1} b2={args.adam_beta2} wd={args.weight_decay}",
        }
        trainer.train()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(records) != warmup + steps:
        raise RuntimeError(f"TRL ran {len(records)} steps, expected {warmup + steps}")
    return {"setup_s": setup_s, "steps": records, "settings": settings, "batch_check": checks[-1]}


# --------------------------------------------------------------------------
# Reference numbers: FLOPs, matmul peak, weight agreement
# --------------------------------------------------------------------------

def workload_flops(wl: Workload) -> dict:
    """Useful FLOPs of one step (a multiply-add = 2 FLOPs). Matmul parameters:
    attention projections, MLP and the LM head (not the embedding lookup or the
    norms). Attention scores and values: 2 · 2 · heads · head_dim FLOPs per
    (query, visible key) pair, causal (only the unmasked pairs). Generation:
    the prefill of each distinct prompt (8 x 32 tokens; TRL prefills each of the
    32 rows) plus one decode token per row per generated position. Update:
    forward + backward = 3 x the forward over all rows x (prompt + completion)
    tokens; no forwards stage (beta = 0, on-policy)."""
    d, layers, heads = MODEL["hidden_size"], MODEL["num_hidden_layers"], MODEL["num_attention_heads"]
    kv, hd, mlp, vocab = MODEL["num_key_value_heads"], MODEL["head_dim"], MODEL["intermediate_size"], MODEL["vocab_size"]
    matmul_params = layers * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * mlp) + d * vocab
    pair = 4 * layers * heads * hd  # FLOPs per (query, key) pair over all layers

    def causal_pairs(start: int, stop: int) -> int:  # queries at positions start..stop-1, keys 0..position
        return sum(p + 1 for p in range(start, stop))

    seq = wl.prompt_len + wl.new_tokens
    prefill = wl.prompts * (2 * matmul_params * wl.prompt_len + pair * causal_pairs(0, wl.prompt_len))
    decode = wl.rows * (2 * matmul_params * wl.new_tokens + pair * causal_pairs(wl.prompt_len, seq))
    forward = wl.rows * (2 * matmul_params * seq + pair * causal_pairs(0, seq))
    return {"matmul_params": matmul_params, "generate": prefill + decode, "update": 3 * forward,
            "forwards": 0, "total": prefill + decode + 3 * forward}


def matmul_peak(size: int = 2048, runs: int = 5) -> dict:
    """float32 size x size matmul rate, jax (jitted) and torch, best and median of `runs`."""
    import jax
    import jax.numpy as jnp
    import torch

    flops = 2 * size ** 3
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    jax_times = []
    for _ in range(runs):
        start = time.perf_counter()
        f(a, b).block_until_ready()
        jax_times.append(time.perf_counter() - start)
    ta, tb = torch.randn(size, size), torch.randn(size, size)
    ta @ tb
    torch_times = []
    for _ in range(runs):
        start = time.perf_counter()
        ta @ tb
        torch_times.append(time.perf_counter() - start)
    return {
        "jax_gflops_best": flops / min(jax_times) / 1e9, "jax_gflops_median": flops / statistics.median(jax_times) / 1e9,
        "torch_gflops_best": flops / min(torch_times) / 1e9,
        "torch_gflops_median": flops / statistics.median(torch_times) / 1e9,
    }


def weight_agreement(ckpt: str, seq: int) -> dict:
    """Both frameworks' logits on one random sequence, from the same checkpoint."""
    import torch
    from transformers import LlamaForCausalLM

    from rlzoo.policy import load_hf

    tokens = np.random.default_rng(0).integers(0, MODEL["vocab_size"], (1, seq))
    hf = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.numpy()
        std = float(hf.model.layers[0].mlp.up_proj.weight.std())
    model, _ = load_hf(ckpt)
    ours = np.asarray(model(np.asarray(tokens, np.int32)))
    return {"max_abs_logit_diff": float(np.abs(ours - ref).max()), "logit_scale": float(np.abs(ref).max()),
            "weight_std_mlp_up_layer0": std}


# --------------------------------------------------------------------------
# Summaries, plots
# --------------------------------------------------------------------------

def summarise(repeats: list[dict], warmup: int, flops: dict) -> dict:
    """Medians over every measured step of every repeat, per part; first step per repeat."""
    measured = [row for rep in repeats for row in rep["steps"][warmup:]]
    med = {part: statistics.median(r[part] for r in measured) for part in ("total",) + PARTS}
    out = {
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "best_total_s": round(min(r["total"] for r in measured), 4),
        "median_cpu_s_per_wall_s": round(statistics.median(r["cpu_s"] / r["total"] for r in measured), 2),
        "median_total_s_per_repeat": [round(statistics.median(r["total"] for r in rep["steps"][warmup:]), 4)
                                      for rep in repeats],
        "first_step_s_per_repeat": [round(rep["steps"][0]["total"], 3) for rep in repeats],
        "setup_s_per_repeat": [round(rep["setup_s"], 3) for rep in repeats],
        "gflops_per_s": {
            "step": round(flops["total"] / med["total"] / 1e9, 2),
            "generate": round(flops["generate"] / med["generate"] / 1e9, 2) if med["generate"] > 0 else None,
            "update": round(flops["update"] / med["update"] / 1e9, 2) if med["update"] > 0 else None,
        },
        "measured_steps": len(measured),
    }
    if "lowerings" in measured[0]:
        out["compiles_per_repeat"] = [
            {f"step{i + 1}": {k: (round(s[k], 3) if k.endswith("_s") else s[k])
                              for k in ("lowerings", "xla_compiles", "trace_s", "lower_s", "xla_compile_s")}
             for i, s in enumerate(rep["steps"][:2])}
            | {"later_steps_lowerings": sum(s["lowerings"] for s in rep["steps"][2:])}
            for rep in repeats
        ]
        out["logged_time_sample_s_median"] = round(statistics.median(r["logged_time_sample_s"] for r in measured), 4)
        out["logged_time_update_s_median"] = round(statistics.median(r["logged_time_update_s"] for r in measured), 4)
    return out


TARGET_NOTES = {
    "step_vs_tunix": "issue #12 target: rlzoo step <= 0.5x tunix's",
    "step_vs_trl": "issue #12 target: rlzoo step <= 0.35x TRL's",
    "fraction_of_matmul_peak": "issue #12 target: >= 60% of the measured jax matmul peak over the whole step",
    "first_step_cold_s": "issue #12 target: first step <= 10 s with an empty compilation cache (repeat 1, a fresh "
                         "process; with --disk-cache cold the later repeats reuse jax's in-process caches)",
    "why_missed": (
        "The update is 61 GFLOP of mostly matrix products at the model's small shapes (a 256-wide model, "
        "3072 x 704 activations), which XLA:CPU runs at 75-120 GFLOP/s on one core here (the 2048^2 "
        "matmul: 80-130); it alone takes 0.6-1.0 s, so a 0.5 s step would need the whole step above the "
        "machine's matmul peak. The issue's targets were set from a machine measuring 240 GFLOP/s. The "
        "first step is XLA compilation (about 7-9 s for the sampler and the update, cold); with the "
        "persistent cache warm it is about 3 s (run with --disk-cache shared --repeats 2)."
    ),
}


def target_report(report: dict) -> dict:
    """Each issue #12 target against this run: the measured value, the target, met or not, and by how much."""
    rlzoo = report["rlzoo"]
    rows = {}

    def row(name, value, target, lower_is_better=True):
        met = value <= target if lower_is_better else value >= target
        rows[name] = {"measured": round(value, 3), "target": target, "met": bool(met),
                      "off_by": None if met else round(value / target, 2), "note": TARGET_NOTES[name]}

    for peer, target in (("tunix", 0.5), ("trl", 0.35)):
        if peer in report:
            row(f"step_vs_{peer}", rlzoo["median_s"]["total"] / report[peer]["median_s"]["total"], target)
    row("fraction_of_matmul_peak", report["fraction_of_jax_matmul_peak"]["rlzoo"]["step"], 0.6,
        lower_is_better=False)
    row("first_step_cold_s", rlzoo["first_step_s_per_repeat"][0], 10.0)  # repeat 1: a fresh process
    rows["why_missed"] = TARGET_NOTES["why_missed"]
    return rows


SCALING_WHY = (
    "Generation scales well (rlzoo's sampler is 1.8-2x HF generate at every length); the update is the same "
    "matrix products as TRL's at the same rate, so rlzoo's step stays at 0.75-0.9x TRL's instead of 0.5x. With "
    "--tunix-python, a second JAX process runs next to rlzoo, and both JAX updates slow down at the largest "
    "batches (256 rows); rerun those points without tunix to compare rlzoo and TRL alone."
)


def scaling_targets(report: dict) -> dict:
    """Issue #12's scaling target at the longest completion and the most rows: <= 0.5x the fastest peer."""
    rows = {}
    for axis in ("completion_length", "rows"):
        points = [p for p in report["points"] if p["axis"] == axis]
        if not points:
            continue
        last = max(points, key=lambda p: p[axis])
        peers = {name: last[name]["median_s"]["total"] for name in ("trl", "tunix") if name in last}
        fastest = min(peers, key=peers.get)
        ratio = last["rlzoo"]["median_s"]["total"] / peers[fastest]
        rows[f"{axis}_{last[axis]}"] = {"measured_vs_fastest_peer": round(ratio, 3), "fastest_peer": fastest,
                                        "target": 0.5, "met": bool(ratio <= 0.5),
                                        "off_by": None if ratio <= 0.5 else round(ratio / 0.5, 2)}
    rows["why_missed"] = SCALING_WHY
    return rows


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in ("rlzoo", "trl", "tunix") if name in report]
    colors = {"generate": "tab:blue", "score": "tab:olive", "forwards": "tab:purple", "update": "tab:orange",
              "other": "tab:gray"}
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.6 * len(names)))
    for i, name in enumerate(names):
        left = 0.0
        for part in PARTS:
            value = report[name]["median_s"][part]
            ax.barh(i, max(value, 0.0), left=left, color=colors[part], label=part if i == 0 else None)
            left += max(value, 0.0)
        ax.text(left, i, f"  {report[name]['median_s']['total']:.2f} s", va="center", fontsize=8)
    labels = {"rlzoo": "rlzoo Trainer.step", "trl": "TRL GRPOTrainer", "tunix": "tunix GRPOLearner"}
    ax.set_yticks(range(len(names)), [labels[name] for name in names])
    ax.invert_yaxis()
    ax.set_xlabel("median seconds per GRPO step (lower is better)")
    ax.set_xlim(0, 1.25 * max(report[n]["median_s"]["total"] for n in names))
    wl = report["workload"]
    ratios = "; ".join(f"{peer} / rlzoo time {report[f'ratio_{peer}_over_rlzoo']['total']:.2f}"
                       for peer in names[1:])
    ax.set_title(f"{wl['prompts']} prompts x {wl['samples']}, {wl['prompt_len']}+{wl['new_tokens']} tokens, "
                 f"{report['params'] / 1e6:.1f}M params; {ratios} (> 1: rlzoo faster)", fontsize=8.5)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, (key, label) in zip(axes, (("completion_length", "completion tokens (rows 32)"),
                                       ("rows", "rows per step (completion 64)"))):
        points = [p for p in report["points"] if p["axis"] == key]
        if not points:
            ax.set_visible(False)
            continue
        xs = [p[key] for p in points]
        for name, style in (("rlzoo", "o-"), ("trl", "s--"), ("tunix", "^:")):
            if name in points[0]:
                ax.plot(xs, [p[name]["median_s"]["total"] for p in points], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("median seconds per step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def set_disk_cache(mode: str, base: pathlib.Path, repeat: int) -> None:
    """jax's persistent compilation cache: a fresh empty directory per repeat
    (cold: every first step compiles), one shared fresh directory (repeats after
    the first start warm), or off. rlzoo's Trainer turns the cache on only when
    no directory is set, so the user's ~/.cache/rlzoo never makes a run warm."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if mode == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return
    directory = base / ("jax" if mode == "shared" else f"jax-{repeat}")
    if jax.config.jax_compilation_cache_dir != str(directory):
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        compilation_cache.reset_cache()


def compare(ckpt: str, wl: Workload, args, counter: CompileCounter, cache_base: pathlib.Path, label: str) -> dict:
    """N repeats of (rlzoo, TRL), plus a matmul-peak sample per repeat. With
    --alternate step (default) each repeat runs rlzoo's warm-up steps, then TRL's
    steps with one rlzoo step after each of TRL's measured ones (so both see the
    same machine load); with --alternate repeat, all rlzoo steps, then all TRL's."""
    reps = {"rlzoo": [], "trl": []} | ({"tunix": []} if args.tunix_python else {})
    peaks = []
    for r in range(args.repeats):
        set_disk_cache(args.disk_cache, cache_base / label, r)
        gc.collect()
        runs = [RlzooRun(ckpt, wl, args.seed + r, counter)]
        try:
            if args.tunix_python:
                runs.append(TunixRun(args.tunix_python, ckpt, wl, args.seed + r, args.threads))
            for run in runs:
                for _ in range(args.warmup if args.alternate == "step" else args.warmup + args.steps):
                    run.step()

            def after(i: int) -> None:
                if args.alternate == "step" and i >= args.warmup:
                    for run in runs:
                        run.step()

            reps["trl"].append(run_trl(ckpt, wl, args.warmup, args.steps, args.seed + r, after_step=after))
        finally:
            for name, run in zip(("rlzoo", "tunix"), runs):
                reps[name].append(run.close())
        for name in reps:
            steps = reps[name][-1]["steps"]
            print(f"  [{label}] repeat {r + 1}/{args.repeats} {name:>5}: first step {steps[0]['total']:.2f}s, "
                  f"median {statistics.median(s['total'] for s in steps[args.warmup:]):.3f}s", flush=True)
        peaks.append(matmul_peak(runs=3))
    flops = workload_flops(wl)
    out = {name: summarise(reps[name], args.warmup, flops) for name in reps}
    for name in reps:
        out[name]["settings"] = reps[name][0]["settings"]
        out[name]["batch_check"] = reps[name][0]["batch_check"]
        out[name]["raw_steps"] = [[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
                                   for s in rep["steps"]] for rep in reps[name]]
    for peer in [name for name in reps if name != "rlzoo"]:
        out[f"ratio_{peer}_over_rlzoo"] = {
            part: (round(out[peer]["median_s"][part] / out["rlzoo"]["median_s"][part], 2)
                   if out["rlzoo"]["median_s"][part] > 1e-6 else None)
            for part in ("total",) + PARTS
        } | {
            "total_best_runs": round(out[peer]["best_total_s"] / out["rlzoo"]["best_total_s"], 2),
            "first_step": round(statistics.median(out[peer]["first_step_s_per_repeat"])
                                / statistics.median(out["rlzoo"]["first_step_s_per_repeat"]), 2),
        }
    out["rlzoo"]["first_step_note"] = FIRST_STEP_NOTE
    out["flops"] = flops
    out["matmul_peak_per_repeat"] = [{k: round(v, 1) for k, v in p.items()} for p in peaks]
    jax_peak = statistics.median(p["jax_gflops_best"] for p in peaks)
    out["fraction_of_jax_matmul_peak"] = {
        name: {k: (round(v / jax_peak, 3) if v is not None else None) for k, v in out[name]["gflops_per_s"].items()}
        for name in reps
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None,
                        help="alternating rlzoo / TRL repeats (default 3; 1 with --scaling)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps per repeat (not in the medians)")
    parser.add_argument("--steps", type=int, default=None,
                        help="measured steps per repeat (default 10; 3 with --scaling)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for both frameworks, and the process pinned to that many CPUs "
                             "(0 = their defaults, unpinned; 1 is robust on a busy machine)")
    parser.add_argument("--disk-cache", choices=("cold", "shared", "off"), default="cold",
                        help="jax persistent compilation cache: fresh per repeat (cold first steps), one fresh "
                             "directory for all repeats (later repeats start warm), or off")
    parser.add_argument("--alternate", choices=("step", "repeat"), default="step",
                        help="alternate rlzoo and TRL step by step (default) or repeat by repeat")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: step time as completion length and rows grow (slow)")
    parser.add_argument("--scaling-lengths", type=int, nargs="*", default=[64, 128, 256, 512])
    parser.add_argument("--scaling-rows", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--tunix-python", default=None,
                        help="the Python of a virtual environment with google-tunix 0.1.7: tunix's GRPOLearner "
                             "joins as a third peer (benchmarks/tunix_worker.py), stepped after each TRL step")
    parser.add_argument("--out", default=None, help="JSON path (a PNG is written next to it)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.scaling else 3
    if args.steps is None:
        args.steps = 3 if args.scaling else 10
    if args.repeats < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --repeats >= 1, --steps >= 1, --warmup >= 0")
    if args.tunix_python and not os.access(args.tunix_python, os.X_OK):
        parser.error(f"--tunix-python {args.tunix_python}: no such executable")
    out = pathlib.Path(args.out or RESULTS / ("grpo_step_scaling.json" if args.scaling else "grpo_step.json"))

    pinned = None
    if args.threads:
        # Before jax is imported: XLA's CPU thread pools are sized at start-up, from
        # the CPUs this process may run on. The Eigen flags alone still let XLA
        # run some work on a second thread, so the process is pinned to N CPUs too.
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(allowed) > args.threads:
            pinned = allowed[:args.threads]
            os.sched_setaffinity(0, pinned)
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   f" intra_op_parallelism_threads={args.threads}").strip()
        import torch

        torch.set_num_threads(args.threads)
    import jax
    import torch
    import transformers
    import trl

    transformers.utils.logging.disable_progress_bar()
    counter = CompileCounter()
    base = Workload()
    longest = max([base.new_tokens] + (args.scaling_lengths if args.scaling else []))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    started = time.time()
    try:
        ckpt = str(tmp / "ckpt")
        write_checkpoint(pathlib.Path(ckpt), args.seed, max_positions=max(2048, base.prompt_len + longest))
        agreement = weight_agreement(ckpt, base.prompt_len + base.new_tokens)
        print(f"same weights: max |logit diff| {agreement['max_abs_logit_diff']:.2e} "
              f"(logits up to {agreement['logit_scale']:.2f})", flush=True)
        report: dict[str, Any] = {
            "benchmark": "one GRPO step, rlzoo Trainer.step vs TRL GRPOTrainer (PyTorch CPU), same weights and "
                         "workload; seconds per step (lower is better), medians over measured steps",
            "command": "python benchmarks/bench_grpo_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "workload": dataclasses.asdict(base) | {"rows": base.rows, "model": MODEL, "init_std": INIT_STD,
                                                   "dtype": "float32", "rewards": "U[0,1)", "beta": 0.0,
                                                   "max_grad_norm": "off", "epochs": 1, "minibatches": 1,
                                                   "eos": "tokenizer EOS id 1024 lies outside the 1024 logits"},
            "params": None,
            "repeats": args.repeats, "warmup_steps": args.warmup, "measured_steps_per_repeat": args.steps,
            "disk_cache": args.disk_cache, "alternate": args.alternate,
            "weight_agreement": agreement,
            "workarounds": WORKAROUNDS,
            "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "jax": jax.__version__, "jax_backend": jax.default_backend(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "trl": trl.__version__,
                        "torch_threads": torch.get_num_threads(), "threads_flag": args.threads,
                        "pinned_cpus": pinned,
                        "load_average_1m_start": round(os.getloadavg()[0], 2)},
        }
        if not args.scaling:
            report |= compare(ckpt, base, args, counter, tmp, "base")
            report["params"] = report["rlzoo"]["settings"]["params"]
            report["targets"] = target_report(report)
        else:
            points = [("completion_length", L, dataclasses.replace(base, new_tokens=L)) for L in args.scaling_lengths]
            points += [("rows", rows, dataclasses.replace(base, prompts=rows // base.samples))
                       for rows in args.scaling_rows]
            report["points"] = []
            for axis, value, wl in points:
                result = compare(ckpt, wl, args, counter, tmp, f"{axis}{value}")
                names = [name for name in ("rlzoo", "trl", "tunix") if name in result]
                point = {"axis": axis, axis: value, "workload": dataclasses.asdict(wl), "flops": result["flops"]}
                for name in names:
                    point[name] = {k: result[name][k] for k in ("median_s", "first_step_s_per_repeat", "gflops_per_s")}
                    if name != "rlzoo":
                        point[f"ratio_{name}_over_rlzoo"] = result[f"ratio_{name}_over_rlzoo"]
                report["points"].append(point)
                report["params"] = result["rlzoo"]["settings"]["params"]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=2, default=str))  # partial results survive a long run
        if args.scaling:
            report["targets"] = scaling_targets(report)
        report["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
        report["wall_time_s"] = round(time.time() - started, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    (plot_scaling if args.scaling else plot)(report, out.with_suffix(".png"))
    if not args.scaling:
        peers = [name for name in ("trl", "tunix") if name in report]
        for part in ("total",) + PARTS:
            print(f"{part:>9}: rlzoo {report['rlzoo']['median_s'][part]:8.3f}s  " + "  ".join(
                f"{peer} {report[peer]['median_s'][part]:8.3f}s ({peer}/rlzoo "
                f"{report[f'ratio_{peer}_over_rlzoo'][part]})" for peer in peers))
        for name in ["rlzoo"] + peers:
            print(f"{name}: first step {report[name]['first_step_s_per_repeat']}s, GFLOP/s "
                  f"{report[name]['gflops_per_s']}")
        print("compiles (lowerings) in step 2: "
              f"{[c['step2']['lowerings'] for c in report['rlzoo']['compiles_per_repeat']]}")
        peak = statistics.median(p["jax_gflops_best"] for p in report["matmul_peak_per_repeat"])
        print(f"jax matmul peak {peak:.1f} GFLOP/s")
    else:
        for p in report["points"]:
            print(f"{p['axis']}={p[p['axis']]}: rlzoo {p['rlzoo']['median_s']['total']:.3f}s  " + "  ".join(
                f"{peer} {p[peer]['median_s']['total']:.3f}s ({peer}/rlzoo {p[f'ratio_{peer}_over_rlzoo']['total']})"
                for peer in ("trl", "tunix") if peer in p))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
