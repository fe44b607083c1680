"""torchrun / DistributedDataParallel helpers.

Launch with ``torchrun --nproc_per_node N -m convision ...``: torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`init_distributed` reads them and starts the process group (NCCL on CUDA, Gloo
on CPU). Without torchrun everything runs in one process and these helpers are no-ops.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from convision.errors import ConfigError


@dataclass
class DistInfo:
    """Where this process stands: rank, number of processes, its device; ``is_main`` for rank 0."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` if CUDA is available, else ``cpu``; also ``cpu``, ``cuda``, ``cuda:N``."""
    if isinstance(device, torch.device):
        device = str(device)
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise ConfigError(f"device: expected auto | cpu | cuda | cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available on this machine")
    index = int(m.group(1)) if m.group(1) is not None else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer in the environment, got {value!r}") from None


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Read torchrun's environment and start the process group when WORLD_SIZE > 1."""
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=dev)
        else:
            dist.init_process_group("gloo", rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, is_main=rank == 0)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    """Destroy the process group, if any."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in one process); returns it."""
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (picklable objects only)."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
