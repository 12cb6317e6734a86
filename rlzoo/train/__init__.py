"""The outer loop (`loop.py`), the supervised warm start (`sft.py`), held-out
evaluation (`evaluate.py`) and what a run is built from (`setup.py`)."""

from rlzoo.train.config import RunConfig
from rlzoo.train.loop import Trainer, step_metrics
from rlzoo.train.setup import SMOLLM2, load_policy, make_task

__all__ = ["RunConfig", "SMOLLM2", "Trainer", "load_policy", "make_task", "step_metrics"]
