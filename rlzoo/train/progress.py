"""A console progress bar with the latest key metrics."""

from __future__ import annotations


class Progress:
    """A rich progress bar (a no-op when disabled or when nothing is left to do)."""

    KEYS = ("reward_mean", "accuracy", "eval_accuracy", "kl", "nll")

    def __init__(self, total: int, start: int, enabled: bool = True, label: str = "RL"):
        self._bar = None
        if enabled and total > start:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
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
