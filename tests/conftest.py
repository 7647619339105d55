"""Shared by the tests: the tiny model and run that the end-to-end tests train, as ``--key value`` flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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


def run_stnet(*args: str, nproc: int | None = None, script: Path | None = None, timeout: int = 600):
    """Run ``python -m stnet ARGS`` (or ``script ARGS``) as a real process, under ``torchrun`` with
    ``nproc`` gloo processes when given; it must succeed without a traceback. Returns the finished process
    (stnet's log lines are on its stderr)."""
    target = [str(script)] if script else ["-m", "stnet"]
    if nproc:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", *target, *args]
    else:
        cmd = [sys.executable, *target, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def pytest_collection_modifyitems(config, items):
    """Run the OpenVINO tests last: with OpenVINO's runtime loaded into the suite's process, later tests
    (prepare's worker pool, the in-process quick bench) died with SIGSEGV at random points on a 2-core
    EPYC without AVX-512; alone, or in a process of their own, they pass."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_backends.py"))
