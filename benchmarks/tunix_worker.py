"""tunix (Google's JAX RL library) as a third peer in bench_grpo_step.py: one
GRPO step of tunix's own `GRPOLearner` on the benchmark's workload, driven
step by step from a parent process over stdin / stdout.

tunix pins its own jax / flax, so it lives in a separate virtual environment
(/work/tunixvenv, `pip install google-tunix==0.1.7`) and this file runs there:

    /work/tunixvenv/bin/python benchmarks/tunix_worker.py --ckpt DIR --prompts 8 --samples 4 \
        --prompt-len 32 --new-tokens 64 --seed 0 [--threads 1] [--check]

DIR is the Hugging Face checkpoint that bench_grpo_step.write_checkpoint
writes. Setup loads it into tunix's Llama3 class (tunix's safetensors loader),
builds an RLCluster (vanilla rollout engine, actor and rollout sharing one
single-device mesh and so one copy of the weights) and a GRPOLearner (beta 0,
so no reference model; num_iterations 1, so no old-policy forward; one
minibatch of all rows; optax AdamW lr 1e-5, b1 0.9, b2 0.99, no weight decay,
no clipping), then prints one JSON line: {"ready": true, "setup_s", "tunix",
"jax", "notes"}; the notes name every workaround or deviation from the workload.

Then each stdin line `step` runs one GRPO step (8 fresh random 32-word prompts,
4 completions of exactly 64 tokens each, U[0, 1) rewards, one optimizer update)
and prints {"total", "generate", "update", "other", "rows", "generated",
"compiles"}: wall seconds; generate wraps RLCluster.generate (tunix's sampler:
prefill + decode + detokenise), update wraps the actor trainer's jitted train
step (loss forward + backward + AdamW), each blocking on its outputs; other is
the rest (prompt hand-off, rewards, advantages, tunix's bookkeeping and metric
buffering). compiles counts XLA backend compilations within the step. `quit`
(or end of input) exits 0. With --check each step line also carries
"param_change" (max |delta| of the actor's parameters over the step, measured
outside the clock) and "rollout_shares_weights" (the sampler sees the update).

tunix's learner owns its training loop (`GRPOLearner.train`), so the worker
hands it an endless prompt iterator that blocks on stdin: a step is timed from
handing over a batch until the learner comes back for the next one, i.e. after
its update and all per-step bookkeeping. Everything but the protocol lines goes
to stderr (file descriptor 1 is pointed at stderr before anything is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

NOTES = [
    "tunix 0.1.7's Llama3 ignores ModelConfig.rope_theta (Attention calls apply_rope without it, so RoPE always "
    "uses theta 1e6); the worker wraps tunix.models.llama3.model.apply_rope to pass the checkpoint's theta (1e4)",
    "tunix's vanilla rollout samples with RolloutConfig.seed, which defaults to PRNGKey(0) on every call; the "
    "worker sets a fresh seed per step (same cost, fresh samples)",
    "no stop can happen: the tokenizer's EOS / pad (id 1024) lies outside the model's 1024 logits, and tunix "
    "stops only on EOS; KV cache size = prompt + completion length (96), prompts are never padded (max_prompt_length 32)",
    "tunix's learner repeats each prompt num_generations times before generating, so the prefill runs on all "
    "32 rows, and its decode loop runs one forward more than needed (64 decode forwards after the prefill; the last "
    "token is discarded)",
    "GRPO loss as tunix defaults: loss_agg_mode sequence-mean-token-mean, epsilon 0.2, advantages (r - mean) / "
    "(std + 1e-6) per group; beta 0: no reference model is built or run; num_iterations 1: no old-policy forward",
    "no metric backends (metrics_logging_options None: no tensorboard / wandb), no checkpointing "
    "(checkpoint_root_directory None), tqdm progress bar off (TQDM_DISABLE=1); max_steps and eval_every_n_steps "
    "are set to 1e9 because the learner needs them, and there is no eval set",
    "one device, mesh axes (fsdp, tp) = (1, 1); no persistent jax compilation cache",
]
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="XLA CPU threads (0: jax's default)")
    p.add_argument("--check", action="store_true", help="report parameter change per step (outside the clock)")
    return p.parse_args()


def model_config(ckpt: pathlib.Path):
    """tunix's Llama3 ModelConfig from the Hugging Face config.json."""
    from tunix.models.llama3 import model as llama

    hf = json.loads((ckpt / "config.json").read_text())
    theta = hf.get("rope_theta") or hf.get("rope_parameters", {}).get("rope_theta")
    return llama.ModelConfig(
        num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        num_kv_heads=hf["num_key_value_heads"], rope_theta=theta, norm_eps=hf["rms_norm_eps"],
        weight_tying=bool(hf.get("tie_word_embeddings", False)),
    )


def use_rope_theta(theta: float) -> None:
    """Make tunix's Llama3 attention use `theta` (it calls apply_rope with its 1e6 default)."""
    from tunix.models.llama3 import model as llama

    base = llama.apply_rope

    def apply_rope(inputs, positions, head_dim, rope_theta=None):
        return base(inputs, positions, head_dim=head_dim, rope_theta=theta)

    llama.apply_rope = apply_rope


class Worker:
    def __init__(self, args: argparse.Namespace, proto):
        import jax
        import jax.numpy as jnp
        import numpy as np
        import optax
        from flax import nnx
        from transformers import AutoTokenizer
        from tunix.models.llama3 import params as llama_params
        from tunix.rl import rl_cluster as rl
        from tunix.rl.grpo import grpo_learner
        from tunix.rl.rollout import base_rollout

        self.jax, self.np, self.nnx, self.args, self.proto = jax, np, nnx, args, proto
        self.compiles = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)
        ckpt = pathlib.Path(args.ckpt)

        cfg = model_config(ckpt)
        use_rope_theta(cfg.rope_theta)
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
        model = llama_params.create_model_from_safe_tensors(str(ckpt), cfg, mesh=mesh, dtype=jnp.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(ckpt)
        self.vocab = cfg.vocab_size
        self.prompt_rng = np.random.default_rng([args.seed, 4])
        self.reward_rng = np.random.default_rng([args.seed, 3])

        self.rollout_config = base_rollout.RolloutConfig(
            max_tokens_to_generate=args.new_tokens, max_prompt_length=args.prompt_len,
            kv_cache_size=args.prompt_len + args.new_tokens, temperature=1.0, top_p=1.0, top_k=None,
        )
        training = rl.RLTrainingConfig(
            actor_optimizer=optax.adamw(learning_rate=1e-5, b1=0.9, b2=0.99, weight_decay=0.0),
            eval_every_n_steps=10**9, max_steps=10**9, checkpoint_root_directory=None, metrics_logging_options=None,
        )
        cluster = rl.ClusterConfig(
            role_to_mesh={rl.Role.ACTOR: mesh, rl.Role.REFERENCE: mesh, rl.Role.ROLLOUT: mesh},
            rollout_engine="vanilla", offload_to_cpu=False, training_config=training,
            rollout_config=self.rollout_config,
        )
        self.cluster = rl.RLCluster(actor=model, reference=None, tokenizer=self.tokenizer, cluster_config=cluster)
        algo = grpo_learner.GRPOConfig(num_generations=args.samples, num_iterations=1, beta=0.0)
        self.learner = grpo_learner.GRPOLearner(rl_cluster=self.cluster, algo_config=algo,
                                                reward_fns=self.random_reward)
        self._wrap_generate()
        self._wrap_train_step()

    # -- clocks ----------------------------------------------------------------
    def _on_event(self, event: str, duration: float, *args, **kwargs) -> None:
        if event == COMPILE_EVENT:
            self.compiles += 1

    def _wrap_generate(self) -> None:
        generate = self.cluster.generate

        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            self.jax.block_until_ready((out.tokens, out.left_padded_prompt_tokens))
            self.parts["generate"] += time.perf_counter() - start
            self.lengths.extend(len(t) for t in out.tokens)
            self.out_of_vocab += sum(int((self.np.asarray(t) >= self.vocab).sum()) for t in out.tokens)
            return out

        self.cluster.generate = timed_generate

    def _wrap_train_step(self) -> None:
        trainer, worker = self.cluster.actor_trainer, self
        jit_steps = trainer.jit_train_and_eval_step

        class TimedTrainStep:
            def __init__(self, inner):
                self.inner, self.func = inner, inner.func  # tunix reads train_step.func.jitted_fn

            def __call__(self, *args, **kwargs):
                start = time.perf_counter()
                out = self.inner(*args, **kwargs)
                worker.jax.block_until_ready((out, worker.nnx.state(trainer.model, worker.nnx.Param)))
                worker.parts["update"] += time.perf_counter() - start
                worker.updates += 1
                return out

        def timed_jit(*args, **kwargs):
            train_step, eval_step = jit_steps(*args, **kwargs)
            return TimedTrainStep(train_step), eval_step

        trainer.jit_train_and_eval_step = timed_jit

    # -- the workload ----------------------------------------------------------
    def prompt(self) -> str:
        return " ".join(f"t{int(i)}" for i in self.prompt_rng.integers(0, self.vocab, self.args.prompt_len))

    def random_reward(self, prompts, completions, **kwargs) -> list[float]:
        return self.reward_rng.random(len(completions)).tolist()

    def params(self) -> list:
        return self.jax.tree.leaves(self.nnx.state(self.cluster.actor_trainer.model, self.nnx.Param))

    def batches(self):
        """The learner's training data: one batch of fresh prompts per `step` line, timed until the next request."""
        step = 0
        while True:
            if step:
                self.finish_step()
            if next_command() != "step":
                return
            prompts = [self.prompt() for _ in range(self.args.prompts)]
            lengths = {len(self.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts}
            if lengths != {self.args.prompt_len}:
                raise AssertionError(f"prompts tokenise to {lengths} tokens, expected {self.args.prompt_len}")
            self.rollout_config.seed = int(self.np.random.default_rng([self.args.seed, 5, step]).integers(2**31))
            self.before = [self.np.array(p) for p in self.params()] if self.args.check else None
            self.parts = {"generate": 0.0, "update": 0.0}
            self.lengths, self.out_of_vocab, self.updates = [], 0, 0
            self.compiles_before = self.compiles
            step += 1
            self.start = time.perf_counter()
            # an array, as a grain batch would be (the learner's jax.tree.map would split a list into its strings)
            yield {"prompts": self.np.array(prompts)}

    def finish_step(self) -> None:
        total = time.perf_counter() - self.start
        row = {"total": total, "generate": self.parts["generate"], "update": self.parts["update"],
               "other": total - self.parts["generate"] - self.parts["update"], "rows": len(self.lengths),
               "generated": sorted(set(self.lengths)), "compiles": self.compiles - self.compiles_before}
        if self.updates != 1 or self.out_of_vocab:
            print(f"tunix_worker: {self.updates} updates, {self.out_of_vocab} generated ids outside the vocabulary",
                  file=sys.stderr)
        if self.before is not None:
            after = self.params()
            row["param_change"] = max(float(self.np.abs(self.np.asarray(a) - b).max())
                                      for a, b in zip(after, self.before))
            rollout = self.jax.tree.leaves(self.nnx.state(self.cluster.rollout.model(), self.nnx.Param))
            row["rollout_shares_weights"] = all(self.np.array_equal(a, r) for a, r in zip(after, rollout))
            row["updates"] = self.updates
        self.proto.write(json.dumps(row) + "\n")
        self.proto.flush()


def next_command() -> str:
    """The next `step` or `quit` from stdin (end of input reads as `quit`)."""
    for line in iter(sys.stdin.readline, ""):
        if line.strip() in ("step", "quit"):
            return line.strip()
        if line.strip():
            print(f"tunix_worker: unknown command {line.strip()!r}", file=sys.stderr)
    return "quit"


def main() -> int:
    args = parse_args()
    if args.threads:
        os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={args.threads}"
    os.environ.setdefault("TQDM_DISABLE", "1")
    proto = os.fdopen(os.dup(1), "w")  # the protocol channel; everything else written to fd 1 lands on stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    start = time.perf_counter()

    import importlib.metadata

    import jax

    worker = Worker(args, proto)
    ready = {"ready": True, "setup_s": time.perf_counter() - start,
             "tunix": importlib.metadata.version("google-tunix"), "jax": jax.__version__, "notes": NOTES}
    proto.write(json.dumps(ready) + "\n")
    proto.flush()
    try:
        worker.learner.train(worker.batches())
    except StopIteration:  # `quit` before the first step
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
