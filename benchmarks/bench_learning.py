"""Learning table: algorithms trained on the built-in arithmetic task from the
same SFT checkpoint, with the same budget and seed.

    python benchmarks/bench_learning.py --families policy-loss advantage reinforce critic --steps 200
    python benchmarks/bench_learning.py --families preference self-play --include grpo --steps 200 --name learning_pairwise

Each algorithm runs with its paper-default Config and the default run
settings (`rlzoo train --algo NAME --steps N`). Results go to
benchmarks/results/<name>.json after every algorithm (an interrupted run
resumes where it stopped; `--rerun NAME ...` replaces those rows) and a PNG
bar chart of final held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import tempfile
import time
import traceback

from rlzoo import list_algorithms
from rlzoo.metrics import read_metrics
from rlzoo.train import RunConfig, Trainer

RESULTS = pathlib.Path(__file__).parent / "results"


def run_one(name: str, args, cache_dir: str) -> dict:
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"learn-{name}-"))
    run = RunConfig(
        algo=name, steps=args.steps, seed=args.seed, eval_every=args.eval_every, checkpoint_every=0,
        run_dir=str(run_dir), cache_dir=cache_dir, progress=False, tensorboard=False,
    )
    started = time.time()
    try:
        summary = Trainer(run, log=lambda _: None).train()
    except Exception as err:  # a failing algorithm is a finding, not a crash of the table
        return {"name": name, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=3)}
    records = read_metrics(run_dir / "metrics.jsonl")
    tail = [r for r in records if "kl" in r][-10:]
    curve = [(r["step"], r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "name": name,
        "start_accuracy": summary["start_accuracy"],
        "final_accuracy": summary["final_accuracy"],
        "best_accuracy": max(a for _, a in curve),
        "final_kl": sum(r["kl"] for r in tail) / max(len(tail), 1),
        "final_train_accuracy": sum(r["accuracy"] for r in tail) / max(len(tail), 1),
        "wall_time_s": round(time.time() - started, 1),
        "eval_curve": curve,
    }


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in result["algorithms"] if "final_accuracy" in r), key=lambda r: r["final_accuracy"])
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(rows) + 1.2))
    names = [r["name"] for r in rows]
    ax.barh(names, [r["final_accuracy"] for r in rows], color="tab:blue", label="after RL")
    ax.scatter([r["start_accuracy"] for r in rows], names, color="black", marker="|", s=80, label="SFT start", zorder=3)
    ax.set_xlabel("held-out accuracy (greedy)")
    ax.set_xlim(0, 1)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"arithmetic, {result['steps']} RL steps, seed {result['seed']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", default=["policy-loss", "advantage", "reinforce", "critic"])
    parser.add_argument("--include", nargs="*", default=[], help="extra algorithm names")
    parser.add_argument("--only", nargs="*", default=None, help="exactly these algorithm names")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="learning_policy")
    parser.add_argument("--cache-dir", default=None, help="SFT cache (default ~/.cache/rlzoo)")
    parser.add_argument("--fresh", action="store_true", help="ignore results already written")
    parser.add_argument("--rerun", nargs="*", default=[], help="run these again, keeping the other results")
    args = parser.parse_args()

    names = args.only or [a.name for a in list_algorithms() if a.family in args.families] + args.include
    out = RESULTS / f"{args.name}.json"
    result = {
        "benchmark": "held-out accuracy after RL from one SFT checkpoint (arithmetic, tiny model, CPU)",
        "command": "python benchmarks/bench_learning.py " + " ".join(
            ([f"--only {' '.join(args.only)}"] if args.only else [f"--families {' '.join(args.families)}"]
             + ([f"--include {' '.join(args.include)}"] if args.include else []))
            + [f"--steps {args.steps}", f"--seed {args.seed}", f"--name {args.name}"]
        ),
        "steps": args.steps, "seed": args.seed, "machine": platform.platform(), "algorithms": [],
    }
    if out.exists() and not args.fresh:
        previous = json.loads(out.read_text())
        if previous.get("steps") == args.steps and previous.get("seed") == args.seed:
            result["algorithms"] = [r for r in previous["algorithms"] if "error" not in r and r["name"] not in args.rerun]
    done = {r["name"] for r in result["algorithms"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if name in done:
            continue
        row = run_one(name, args, args.cache_dir)
        result["algorithms"].append(row)
        out.write_text(json.dumps(result, indent=2))
        plot(result, out.with_suffix(".png"))
        shown = f"{row['start_accuracy']:.3f} -> {row['final_accuracy']:.3f} in {row['wall_time_s']}s" if "error" not in row else row["error"]
        print(f"[{i + 1}/{len(names)}] {name}: {shown}", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
