"""Ctrl-C that never costs a step: SIGINT is honoured at once while the run
only reads its state (sampling, forwards, evaluation), and deferred to the
end of a critical section while it changes it (the update, the metrics
record, a checkpoint write). A second Ctrl-C during a critical section stops
at once without saving; the newest completed checkpoint stays.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


class AbortedWithoutSaving(KeyboardInterrupt):
    """A second Ctrl-C inside a critical section: the state may be half-updated."""


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on Ctrl-C after saving; `message` says where."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InterruptGuard:
    """Installs a SIGINT handler for the `with` block (main thread only; in
    other threads it does nothing and Python's default applies)."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self._depth = 0
        self._pending = False
        self._previous = None

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self._depth == 0:
            raise KeyboardInterrupt
        if self._pending:
            raise AbortedWithoutSaving
        self._pending = True
        self.log("\ninterrupt: finishing this step's update first (Ctrl-C again to stop without saving)")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block that runs to its end before a Ctrl-C takes effect."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending:
            self._pending = False
            raise KeyboardInterrupt


NO_GUARD = InterruptGuard()
"""Never entered: `critical()` only counts depth, so `Trainer.step` called
outside `train()` behaves as plain Python."""
