"""torchrun / DistributedDataParallel helpers.

Launch with ``torchrun --nproc_per_node N -m convision ...``: torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`init_distributed` reads them and starts the process group (NCCL on CUDA, Gloo
on CPU). Without torchrun everything runs in one process and these helpers are no-ops.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (torch 2.14: "SyncBatchNorm expected input tensor
to be on GPU ..."), so on CPU :func:`convert_sync_batchnorm` uses :class:`CPUSyncBatchNorm`, which
computes the batch statistics over all processes with autograd-aware all-reduces (Gloo).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

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


def resolve_device(
    device: str | torch.device = "auto", local_rank: int = 0
) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` if CUDA is available, else ``cpu``; also ``cpu``, ``cuda``, ``cuda:N``."""
    if isinstance(device, torch.device):
        device = str(device)
    text = str(device).strip().lower()
    if text == "auto":
        return (
            torch.device("cuda", local_rank)
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise ConfigError(
            f"device: expected auto | cpu | cuda | cuda:N, got {device!r}"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device: {device!r} requested but CUDA is not available on this machine"
        )
    index = int(m.group(1)) if m.group(1) is not None else local_rank
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"{name}: expected an integer in the environment, got {value!r}"
        ) from None


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Read torchrun's environment and start the process group when WORLD_SIZE > 1."""
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group(
                "nccl", rank=rank, world_size=world_size, device_id=dev
            )
        else:
            dist.init_process_group("gloo", rank=rank, world_size=world_size)
    return DistInfo(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=dev,
        is_main=rank == 0,
    )


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside torchrun."""
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def cleanup(wait: bool = True) -> None:
    """Destroy the process group, if any. With ``wait`` (a normal end) every process first reaches
    a barrier: destroying a Gloo group while a peer still has traffic in flight can abort that peer
    at exit. After an error pass ``wait=False``: the other processes may never arrive."""
    if is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in one process); returns it. A CPU tensor
    (metric counts) goes through the current GPU under NCCL, which reduces CUDA tensors only."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu.to(tensor.device))
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` in rank order (``[obj]`` in one process; picklable objects only)."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (picklable objects only)."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of every input is the sum of the output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics cover the whole global batch (any device, Gloo).

    Mean and variance are all-reduced in two passes (sum and count, then squared deviations) by an
    all-reduce whose backward all-reduces the gradients, as torch's CUDA SyncBatchNorm does.
    Outside training, or without a process group, it is plain batch norm. Same parameters,
    buffers and state-dict keys as ``BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_initialized()):
            return super().forward(input)
        self._check_input_dim(input)
        all_reduce = _AllReduceSum.apply
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = torch.full(
            (1,), input.numel() // channels, dtype=x.dtype, device=x.device
        )
        totals = all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[channels]
        mean = totals[:channels] / n
        var = (
            all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / n
        )  # biased, as batch norm uses
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        ):
            factor = 0.0 if self.momentum is None else self.momentum
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(
                    factor * mean.to(self.running_mean.dtype)
                )
                self.running_var.mul_(1 - factor).add_(
                    factor * unbiased.to(self.running_var.dtype)
                )
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms -> torch's SyncBatchNorm on CUDA, :class:`CPUSyncBatchNorm` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (CPUSyncBatchNorm, nn.SyncBatchNorm)
    ):
        out = CPUSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
