"""Shared by the tests: the tiny model and run that the end-to-end tests train, as ``--key value`` flags."""

from __future__ import annotations

from typing import Any

# StNet-R18 on 32-pixel crops of 2 segments x 2 frames, 3 classes, in one fp32 process: seconds per epoch.
TINY_RUN: dict[str, Any] = {
    "depth": 18,
    "T": 2,
    "N": 2,
    "target_size": 32,
    "short_size": 36,
    "dataset_type": "kinetics400",
    "class_num": 3,
    "batch_size": 3,
    "workers": 0,
    "precision": "fp32",
    "channels_last": False,
}


def tiny_argv(**changes: Any) -> list[str]:
    """The flags of :data:`TINY_RUN` with ``changes`` (a value of None drops the key)."""
    settings = {**TINY_RUN, **changes}
    argv = []
    for key, value in settings.items():
        if value is not None:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv
