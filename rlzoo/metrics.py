"""Run metrics: JSONL and TensorBoard event files, and a PNG plot at the end.

Every record is one flat dict of floats keyed by name, written with its step.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np

PLOTTED = (("reward_mean", "reward"), ("eval_accuracy", "held-out accuracy"), ("kl", "KL to reference"))


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalars (python, numpy or jax) as python floats."""
    return {name: float(np.asarray(value)) for name, value in metrics.items()}


class MetricsWriter:
    """Writes `{"step": s, **metrics}` lines to `metrics.jsonl` (appending when
    a run resumes) and the same scalars to TensorBoard event files. With
    `enabled=False` (the non-primary processes of a multi-host run) it only
    converts the metrics and writes nothing."""

    def __init__(self, run_dir: str | pathlib.Path, tensorboard: bool = True, append: bool = False,
                 enabled: bool = True):
        self.run_dir = pathlib.Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._file = self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        values = to_floats(metrics)
        if self._file is None:
            return values
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in values.items():
                if math.isfinite(value):
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()
        return values

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def truncate_after(path: str | pathlib.Path, step: int) -> int:
    """Cut `metrics.jsonl` back to its complete records at or before `step`
    (the checkpoint a run resumes from): a record cut off by a kill, or
    written by steps the resumed run will redo, goes. Rewrites the file
    atomically; returns how many lines were dropped."""
    path = pathlib.Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record["step"]) <= step
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += line.strip() != ""
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return dropped


def read_metrics(path: str | pathlib.Path) -> list[dict[str, float]]:
    """The records of a metrics.jsonl, in order; a resumed run's repeated
    steps keep their latest record."""
    by_step: dict[int, dict[str, float]] = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step.setdefault(int(record["step"]), {}).update(record)
    return [by_step[s] for s in sorted(by_step)]


def plot_run(metrics_path: str | pathlib.Path, out_path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """PNG of reward, held-out accuracy and KL against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.2))
    for ax, (key, label) in zip(axes, PLOTTED):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = pathlib.Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
