"""Where a GRPO step's time goes: XLA's own per-op trace of the jitted
generate call and of the jitted update, each op attributed to the JAX
operation that produced it.

The workload is issue #12's (the one of bench_grpo_step.py): a Llama decoder
(vocab 1024, hidden 256, 4 layers, 8 heads, 4 KV heads, head_dim 32, MLP
704), 8 prompts x 4 samples, 32 prompt tokens, 64 new tokens, temperature 1,
no end token; the update is one on-policy GRPO step (beta 0, AdamW) on such
a batch. The jax profiler records every executed XLA op; the compiled HLO's
metadata names the JAX operation (op_name) behind each one, so the report
groups the time: for generation into projections, decode attention, the KV
cache write, sampling and the rest; for the update into matrix products
(forward, backward), attention's softmax, elementwise work and the
optimizer. For the update it also gives the products' achieved GFLOP/s next
to a 2048^2 float32 matmul measured in the same process.

    python benchmarks/profile_step.py                 # both parts: results/profile_generate.json, profile_update.json
    python benchmarks/profile_step.py --part update --top 40   # and print the 40 costliest ops
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

RESULTS = os.path.join(os.path.dirname(__file__), "results")

GENERATE_GROUPS = (
    # (group, test on the op's JAX op_name), first match wins.
    ("sampling (random numbers, categorical)", lambda name: "_uniform" in name or "_gumbel" in name
     or "cumsum" in name),
    ("attention (scores and weighted values)", lambda name: "bkgts" in name or "nqs" in name
     or "reduce_max" in name and "log_softmax" not in name or "reduce_sum" in name),
    ("KV cache write", lambda name: "dynamic_update_slice" in name),
    ("projections and output head", lambda name: name.endswith("dot_general")),
)
UPDATE_GROUPS = (
    ("optimizer and finite checks (outside the gradient)", lambda name: "while/body" not in name),
    ("attention products (scores, weighted values)", lambda name: ("nqs" in name or "nqd" in name)
     and name.endswith("dot_general")),
    ("matrix products, backward (input and weight gradients)", lambda name: "transpose(jvp" in name
     and (name.endswith("dot_general") or name.endswith("/transpose"))),
    ("matrix products, forward (projections, output head)", lambda name: name.endswith("dot_general")),
    ("softmax and log-softmax (max, exp, sums)", lambda name: "softmax" in name or "reduce_max" in name
     or "reduce_sum" in name or "/exp" in name),
)
OTHER = "other elementwise (activations, norms, RoPE, masks, copies)"
MODEL = dict(vocab_size=1024, dim=256, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=32, mlp_dim=704,
             norm_eps=1e-5)
GROUPS_OF_PROMPTS, SAMPLES, PROMPT_LEN, NEW_TOKENS = 8, 4, 32, 64


def _op_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (shape, JAX op_name) from the compiled module's metadata."""
    names = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]*)\"", line)
        if match:
            names[match.group(1)] = (match.group(2), match.group(3))
    return names


def _median_seconds(run, repeats: int = 5) -> float:
    run()  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _trace(run, names: dict, calls: int) -> collections.Counter:
    """ms per call of every executed op of `names`, from one profiler trace."""
    import jax

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(calls):
            run()
        jax.profiler.stop_trace()
        (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace_file) as f:
            events = json.load(f)["traceEvents"]
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event["name"] in names:
            per_op[event["name"]] += event["dur"] / 1e3 / calls
    return per_op


def _group(per_op: collections.Counter, names: dict, groups) -> collections.Counter:
    per_group: collections.Counter = collections.Counter()
    for op, ms in per_op.items():
        op_name = names[op][1]
        per_group[next((g for g, test in groups if test(op_name)), OTHER)] += ms
    return per_group


def _dot_flops(hlo_text: str) -> dict[str, float]:
    """FLOPs of the matrix products behind each executed HLO op: a dot's own
    (2 x output elements x contracted size), a fusion's the sum over the
    dots of the computation it calls."""
    shapes: dict[str, list[int]] = {}
    per_computation: collections.Counter = collections.Counter()
    calls: dict[str, str] = {}
    own: dict[str, float] = {}
    computation = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            computation = header.group(1)
            continue
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]", line)
        if not match:
            continue
        name = match.group(1)
        shapes[name] = [int(d) for d in match.group(2).split(",") if d]
        called = re.search(r"calls=%([\w.\-]+)", line)
        if called:
            calls[name] = called.group(1)
        dot = re.search(r" dot\(%([\w.\-]+), .*lhs_contracting_dims=\{([\d,]*)\}", line)
        if dot:
            lhs = shapes.get(dot.group(1), [])
            flops = 2.0
            for d in shapes[name]:
                flops *= d
            for d in dot.group(2).split(","):
                if d and lhs:
                    flops *= lhs[int(d)]
            own[name] = flops
            per_computation[computation] += flops
    out = dict(own)
    for name, computation in calls.items():
        if per_computation[computation]:
            out[name] = per_computation[computation]
    return out


def _report(part: str, workload: dict, median_s: float, per_op, names, groups, threads: int) -> dict:
    per_group = _group(per_op, names, groups)
    total = sum(per_group.values())
    return {
        "benchmark": f"profile of the jitted {part} (XLA ops per call under the profiler, ms)",
        "workload": workload,
        "threads": threads,
        f"{part}_median_s_unprofiled": round(median_s, 4),
        "profiled_op_ms_per_call": round(total, 1),
        "groups_ms": {g: round(ms, 1) for g, ms in per_group.most_common()},
        "groups_share": {g: round(ms / total, 3) for g, ms in per_group.most_common()},
        "top_ops": [{"op": op, "shape": names[op][0], "jax_op": names[op][1], "ms": round(ms, 2)}
                    for op, ms in per_op.most_common(30)],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def profile_generate(model, calls: int, threads: int) -> tuple[dict, collections.Counter, dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rlzoo.sampling import Sampler

    prompts = np.random.default_rng(0).integers(0, model.cfg.vocab_size, (GROUPS_OF_PROMPTS, PROMPT_LEN))
    sampler = Sampler()

    def generate():
        rollout = sampler(model, prompts.tolist(), num_samples=SAMPLES, max_new_tokens=NEW_TOKENS,
                          rng=jax.random.key(0), temperature=1.0, eos_id=-1, pad_id=0)
        jax.block_until_ready(rollout.tokens)

    median_s = _median_seconds(generate)
    (function,) = sampler._functions.values()
    _, state = nnx.split(model)
    hlo = function.lower(
        state, np.zeros((GROUPS_OF_PROMPTS, PROMPT_LEN), np.int32), np.full((GROUPS_OF_PROMPTS,), PROMPT_LEN, np.int32),
        jax.random.key(0), jnp.float32(1.0), jnp.float32(1.0), np.array([-1], np.int32), jnp.int32(0),
    ).compile().as_text()
    names = _op_names(hlo)
    per_op = _trace(generate, names, calls)
    workload = {"model": MODEL, "prompts": GROUPS_OF_PROMPTS, "samples": SAMPLES, "prompt_len": PROMPT_LEN,
                "new_tokens": NEW_TOKENS, "temperature": 1.0}
    return _report("generate", workload, median_s, per_op, names, GENERATE_GROUPS, threads), per_op, names


def matmul_gflops(size: int = 2048, runs: int = 5) -> float:
    """Best float32 size^2 matmul rate of jax here (GFLOP/s)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def profile_update(model, calls: int, threads: int) -> tuple[dict, collections.Counter, dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rlzoo.registry import get_algorithm
    from rlzoo.rollout import Rollout
    from rlzoo.update import TrainState, algorithm_loss, make_optimizer, make_update

    graphdef, params = nnx.split(model)
    algo = get_algorithm("grpo")
    cfg = algo.Config(kl_coef=0.0)
    optimizer = make_optimizer(1e-5, max_grad_norm=0.0)
    update = jax.jit(make_update(graphdef, algorithm_loss(algo, cfg), optimizer,
                                 outputs=algo.policy_outputs(cfg), on_policy=True))
    rows, length = GROUPS_OF_PROMPTS * SAMPLES, PROMPT_LEN + NEW_TOKENS
    rng = np.random.default_rng(0)
    mask = np.broadcast_to(np.arange(length)[None] >= PROMPT_LEN, (rows, length))
    rollout = Rollout(
        tokens=jnp.asarray(rng.integers(0, model.cfg.vocab_size, (rows, length)), jnp.int32),
        loss_mask=jnp.asarray(mask), behaviour_logprobs=jnp.zeros((rows, length), jnp.float32),
        rewards=jnp.asarray(rng.random(rows), jnp.float32), sample_weight=jnp.ones((rows,), jnp.float32),
        group_size=SAMPLES,
    )
    advantages = jnp.asarray(rng.normal(size=(rows, length)) * mask, jnp.float32)
    state = TrainState(params=params, opt_state=optimizer.init(params), algo_state=None, step=jnp.int32(0),
                       rng=jax.random.key_data(jax.random.key(0)))

    def run():
        jax.block_until_ready(update(state, rollout, advantages))

    median_s = _median_seconds(run)
    hlo = update.lower(state, rollout, advantages).compile().as_text()
    names = _op_names(hlo)
    per_op = _trace(run, names, calls)
    workload = {"model": MODEL, "rows": rows, "length": length, "trained_tokens_per_row": NEW_TOKENS,
                "algo": "grpo", "kl_coef": 0.0, "optimizer": "adamw lr 1e-5, no clipping", "on_policy": True}
    report = _report("update", workload, median_s, per_op, names, UPDATE_GROUPS, threads)
    flops = _dot_flops(hlo)
    dot_ms = sum(ms for op, ms in per_op.items() if op in flops)
    dot_flops = sum(flops[op] for op in per_op if op in flops)
    report["matrix_products"] = {
        "ms_per_call": round(dot_ms, 1),
        "share_of_op_time": round(dot_ms / report["profiled_op_ms_per_call"], 3),
        "gflop": round(dot_flops / 1e9, 2),
        "achieved_gflops_per_s": round(dot_flops / dot_ms / 1e6, 1),
        "jax_matmul_2048_gflops_per_s": round(matmul_gflops(), 1),
        "note": "dots counted from the compiled HLO (2 x output size x contracted size); the rate is the products' "
                "own, against a 2048^2 float32 matmul in the same process. Approximate: the few products XLA "
                "hands to Eigen rather than YNNPACK (some weight gradients) end their trace event before their "
                "work does, so part of their time is booked to the ops that follow them",
    }
    return report, per_op, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("generate", "update", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1, help="XLA CPU threads (1 is robust on a busy machine)")
    parser.add_argument("--calls", type=int, default=2, help="profiled calls of each part")
    parser.add_argument("--top", type=int, default=0, help="print the N costliest ops of each part")
    parser.add_argument("--out-dir", default=RESULTS, help="where profile_<part>.json goes")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.calls < 1:
        parser.error("--threads and --calls must be >= 1")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               f" intra_op_parallelism_threads={args.threads}").strip()
    # The thread flags alone still let XLA run some work on another CPU: pin the
    # process too, as bench_grpo_step.py does, so the two report the same machine.
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) > args.threads:
        os.sched_setaffinity(0, allowed[:args.threads])
    from rlzoo.policy.model import ModelConfig, create_model

    model = create_model(ModelConfig(**MODEL))
    parts = ("generate", "update") if args.part == "both" else (args.part,)
    os.makedirs(args.out_dir, exist_ok=True)
    for part in parts:
        profile = profile_generate if part == "generate" else profile_update
        report, per_op, names = profile(model, args.calls, args.threads)
        path = os.path.join(args.out_dir, f"profile_{part}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        total = report["profiled_op_ms_per_call"]
        print(f"{part}: {report[part + '_median_s_unprofiled']:.3f} s median unprofiled; "
              f"{total:.0f} ms of XLA ops per call under the profiler")
        for group, ms in report["groups_ms"].items():
            print(f"  {ms:7.1f} ms  {ms / total:5.1%}  {group}")
        if "matrix_products" in report:
            products = report["matrix_products"]
            print(f"  matrix products: {products['share_of_op_time']:.0%} of op time at "
                  f"{products['achieved_gflops_per_s']} GFLOP/s (2048^2 matmul here: "
                  f"{products['jax_matmul_2048_gflops_per_s']})")
        for op, ms in per_op.most_common(args.top):
            print(f"  {ms:7.2f} ms  {op:28s} {names[op][0]:32s} {names[op][1][-60:]}")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
