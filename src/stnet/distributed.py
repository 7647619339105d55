"""torch.distributed set-up for runs launched by torchrun (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process needs nothing."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each process of a CUDA run uses the GPU of its local rank."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` under DDP, with each gradient a view into DDP's all-reduce buckets.

    A bucket takes its parameter's strides, but autograd gives the gradient of a channels-last 1×1
    convolution weight (and of the depthwise and temporal ones) other strides in its size-1 dimensions,
    so DDP would warn "Grad strides do not match bucket view strides" and copy those gradients every
    step. Gradients that *are* bucket views have the bucket's strides by construction: they exist
    before wrapping (DDP turns existing gradients into views) and are zeroed in place between steps,
    never set to None (``optimizer.zero_grad(set_to_none=False)``), so autograd accumulates into them.
    Call after the model's final move and layout change.
    """
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)  # the parameter's own strides
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
    )


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any, info: DistInfo, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank ``dst`` only; None on the others."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Replace each tensor by its mean over the processes, in place."""
    if not info.enabled:
        return
    for t in tensors:
        dist.all_reduce(t)
        t.div_(info.world_size)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device: torch.device) -> Iterator[DistInfo]:
    """Join torchrun's process group (if launched by it) for the duration of a command."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        shutdown(info)
