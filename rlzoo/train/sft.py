"""The supervised warm start: next-token likelihood of the task's reference
solutions, cached on disk by every setting that changes its result."""

from __future__ import annotations

import hashlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from rlzoo import ops
from rlzoo.checkpoint import CheckpointError, Checkpointer
from rlzoo.experience.prompts import encode_prompt
from rlzoo.rollout import Rollout
from rlzoo.sharding import is_primary, shard_batch
from rlzoo.tasks import Task
from rlzoo.train.config import RunConfig
from rlzoo.train.progress import Progress
from rlzoo.update import TrainState, make_optimizer, make_update

SFT_VERSION = 1
"""Bump when the warm start's recipe changes, so cached weights are not reused."""


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


def nll_loss(stats, rollout, targets, algo_state):
    """Token-mean negative log-likelihood of the trained tokens."""
    nll = ops.aggregate(-stats.logprobs, rollout, "token-mean")
    return nll, {"nll": nll}


def sft_length(task: Task, tokenizer, chat: bool) -> int:
    """A power of two that fits prompt + solution + EOS of 64 probe examples."""
    probe = task.train_examples(np.random.default_rng(0), 64)
    longest = max(len(encode_prompt(tokenizer, ex.prompt, chat)) + len(tokenizer.encode(ex.solution)) + 1 for ex in probe)
    return 1 << math.ceil(math.log2(longest + 4))


def cache_key(run: RunConfig, value_head: bool) -> str:
    key = json.dumps([run.task, sorted(run.task_options), run.data_dir, run.model, value_head,
                      run.sft_steps, run.sft_batch, run.sft_learning_rate, run.seed, SFT_VERSION])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def train_sft(graphdef, state: TrainState, run: RunConfig, task: Task, tokenizer, chat: bool, mesh, *, progress: bool = True):
    """`run.sft_steps` AdamW steps on reference solutions from `state`'s
    params (a TrainState laid out on the mesh); returns the new params."""
    optimizer = make_optimizer(run.sft_learning_rate, 1.0, warmup_steps=min(20, run.sft_steps // 10))
    update = jax.jit(make_update(graphdef, nll_loss, optimizer, reduction=lambda name: "sum"), donate_argnums=0)
    # A state of its own: the update donates its input buffers.
    state = jax.tree.map(jnp.copy, state).replace(opt_state=jax.jit(optimizer.init)(state.params))
    rng = np.random.default_rng([run.seed, 2**31 - 1])
    length = sft_length(task, tokenizer, chat)
    bar = Progress(run.sft_steps, 0, enabled=progress, label="SFT")
    for i in range(run.sft_steps):
        batch = shard_batch(sft_batch(task, tokenizer, chat, rng, run.sft_batch, length), mesh)
        state, metrics = update(state, batch, jnp.zeros(batch.tokens.shape, jnp.float32))
        if (i + 1) % 25 == 0 or i + 1 == run.sft_steps:
            bar.update(i + 1, {"nll": float(metrics["nll"])})
    bar.close()
    return state.params


def cached_sft(graphdef, state: TrainState, run: RunConfig, task: Task, tokenizer, chat: bool, mesh, value_head: bool,
               *, log=print, progress: bool = True):
    """The warm-start params for these settings: from the cache, or trained and cached."""
    cache = run.resolved_cache_dir() / "sft" / cache_key(run, value_head)
    ckpt = Checkpointer(cache, max_to_keep=1, primary=is_primary())
    try:
        trained = None
        if ckpt.latest_step() is not None:
            try:
                trained, _ = ckpt.restore(state.params, warn=log)
                log(f"warm start: reusing cached SFT weights from {cache}")
            except CheckpointError:
                log(f"warm start: the cache in {cache} is damaged; training again")
        if trained is None:
            trained = train_sft(graphdef, state, run, task, tokenizer, chat, mesh, progress=progress)
            ckpt.save(run.sft_steps, trained, {"steps": run.sft_steps})
            log(f"warm start: {run.sft_steps} SFT steps cached in {cache}")
    finally:
        ckpt.close()
    return trained
