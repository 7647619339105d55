"""Where a run executes: device selection."""

from __future__ import annotations

import sys

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
