"""Training engine: the one training loop, checkpoints, torchrun helpers."""

from __future__ import annotations

from convision.engine.checkpoint import (
    load_checkpoint,
    load_matching_state,
    save_checkpoint,
)
from convision.engine.distributed import (
    DistInfo,
    all_reduce_sum_,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    resolve_device,
)
from convision.engine.trainer import (
    Metric,
    Task,
    Trainer,
    evaluate,
    make_lr_lambda,
    seed_everything,
)

__all__ = [
    "DistInfo",
    "Metric",
    "Task",
    "Trainer",
    "all_reduce_sum_",
    "barrier",
    "broadcast_object",
    "cleanup",
    "evaluate",
    "init_distributed",
    "load_checkpoint",
    "load_matching_state",
    "make_lr_lambda",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]
