"""Where and how a run executes: device selection, the precision policy (autocast), seeding, logging."""

from __future__ import annotations

import contextlib
import os
import random
import sys

import numpy as np
import torch

from stnet.errors import StnetError


class DeviceError(StnetError, ValueError):
    """A device that was asked for and is not there."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; ``cpu``, ``cuda``, ``cuda:K`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device: '{name}' is not a device; use auto, cpu, cuda or cuda:K") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device: '{name}' was asked for but CUDA is not available here; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device: '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return device


def log_stderr(message: str) -> None:
    """Logs and progress go to stderr: stdout carries only results (``--json``: only JSON)."""
    print(message, file=sys.stderr, flush=True)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    ``auto`` picks bf16 where the hardware computes it natively (CPUs with AVX-512 BF16 or AMX, CUDA
    Ampere and newer), fp16 on older GPUs, and fp32 on other CPUs.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` on ``device`` (plain fp32 when ``dtype`` is None); reusable."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
