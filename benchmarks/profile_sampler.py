"""Where the sampler's time goes: XLA's own per-op trace of one jitted
generate call, each op attributed to the JAX operation that produced it.

The workload is issue #12's: the Llama decoder of bench_grpo_step.py
(vocab 1024, hidden 256, 4 layers, 8 heads, 4 KV heads, head_dim 32, MLP
704), 8 prompts x 4 samples, 32 prompt tokens, 64 new tokens, temperature
1, no end token. The jax profiler records every executed XLA op; the
compiled HLO's metadata names the JAX operation (op_name) behind each one,
so the report groups time into decode attention, projections, the KV
cache write, sampling (random numbers) and the rest.

    python benchmarks/profile_sampler.py           # writes results/sampler_profile.json
    python benchmarks/profile_sampler.py --top 40  # and prints the 40 costliest ops
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
import sys
import tempfile
import time

GROUPS = (
    # (group, test on the op's JAX op_name), first match wins.
    ("sampling (random numbers, categorical)", lambda name: "_gumbel" in name or "_uniform" in name
     or name.endswith("while/body/reduce")),
    ("attention (scores and weighted values)", lambda name: "bkgts" in name or "nqs" in name
     or "reduce_max" in name and "log_softmax" not in name or "reduce_sum" in name),
    ("KV cache write", lambda name: "dynamic_update_slice" in name),
    ("projections and output head", lambda name: name.endswith("dot_general")),
)


def _op_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    names = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]*)\"", line)
        if match:
            names[match.group(1)] = (match.group(2), match.group(3))
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="XLA CPU threads (1 is robust on a busy machine)")
    parser.add_argument("--calls", type=int, default=2, help="profiled generate calls")
    parser.add_argument("--top", type=int, default=0, help="print the N costliest ops")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sampler_profile.json"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.calls < 1:
        parser.error("--threads and --calls must be >= 1")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               f" intra_op_parallelism_threads={args.threads}").strip()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rlzoo.policy.model import ModelConfig, create_model
    from rlzoo.sampling import Sampler

    cfg = ModelConfig(vocab_size=1024, dim=256, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=32,
                      mlp_dim=704, norm_eps=1e-5)
    model = create_model(cfg)
    groups, samples, prompt_len, new_tokens = 8, 4, 32, 64
    prompts = np.random.default_rng(0).integers(0, cfg.vocab_size, (groups, prompt_len))
    sampler = Sampler()

    def generate():
        rollout = sampler(model, prompts.tolist(), num_samples=samples, max_new_tokens=new_tokens,
                          rng=jax.random.key(0), temperature=1.0, eos_id=-1, pad_id=0)
        jax.block_until_ready(rollout.tokens)

    generate()  # compiles
    times = []
    for _ in range(5):
        start = time.perf_counter()
        generate()
        times.append(time.perf_counter() - start)

    (function,) = sampler._functions.values()
    _, state = nnx.split(model)
    hlo = function.lower(
        state, np.zeros((groups, prompt_len), np.int32), np.full((groups,), prompt_len, np.int32),
        jax.random.key(0), jnp.float32(1.0), jnp.float32(1.0), np.array([-1], np.int32), jnp.int32(0),
    ).compile().as_text()
    names = _op_names(hlo)

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(args.calls):
            generate()
        jax.profiler.stop_trace()
        (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace_file) as f:
            events = json.load(f)["traceEvents"]

    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event["name"] in names:
            per_op[event["name"]] += event["dur"] / 1e3 / args.calls  # ms per generate call
    per_group: collections.Counter = collections.Counter()
    for op, ms in per_op.items():
        op_name = names[op][1]
        group = next((g for g, test in GROUPS if test(op_name)), "other (norms, RoPE, softmax, masks, copies)")
        per_group[group] += ms
    total = sum(per_group.values())
    report = {
        "benchmark": "sampler profile: XLA ops of one generate call, grouped (ms per call under the profiler)",
        "workload": {"model": cfg.__dict__ | {"rope_scaling": None}, "prompts": groups, "samples": samples,
                     "prompt_len": prompt_len, "new_tokens": new_tokens, "temperature": 1.0},
        "threads": args.threads,
        "generate_median_s_unprofiled": round(statistics.median(times), 4),
        "profiled_op_ms_per_call": round(total, 1),
        "groups_ms": {g: round(ms, 1) for g, ms in per_group.most_common()},
        "groups_share": {g: round(ms / total, 3) for g, ms in per_group.most_common()},
        "top_ops": [{"op": op, "shape": names[op][0], "jax_op": names[op][1], "ms": round(ms, 2)}
                    for op, ms in per_op.most_common(30)],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"generate: {report['generate_median_s_unprofiled']:.3f} s median unprofiled; "
          f"{total:.0f} ms of XLA ops per call under the profiler")
    for group, ms in per_group.most_common():
        print(f"  {ms:7.1f} ms  {ms / total:5.1%}  {group}")
    for op, ms in per_op.most_common(args.top):
        print(f"  {ms:7.2f} ms  {op:28s} {names[op][0]:32s} {names[op][1][-60:]}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
