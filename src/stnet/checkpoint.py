"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the model, optimizer and AMP scaler states, the epoch and step reached, the best
validation top-1, every random-number generator's state and the resolved config. It is a plain
``torch.save`` of tensors, numbers, strings and containers, so it loads with ``weights_only=True``
(no code runs on load).
"""

from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stnet.errors import OSFailure, StnetError
from stnet.fileio import TEMP_SUFFIX, atomic_path

FORMAT = "stnet-checkpoint-1"
_PERIODIC = re.compile(r"^stnet-(\d+)\.pt$")
CHECKPOINT_FILES = re.compile(r"last\.pt|best\.pt|stnet-\d+\.pt")  # what a training run writes


class CheckpointError(StnetError, ValueError):
    """A checkpoint that cannot be read or does not belong to this run."""


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's generators, in weights-only-loadable types."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (see module doc) to ``path`` atomically: temp file, fsync, rename.

    A failed write (full disk, read-only folder) is an :class:`~stnet.errors.OSFailure` naming ``path``
    and the cause, and ``path`` keeps its previous content. torch.save reports a failed write as
    ``RuntimeError: ... unexpected pos``; given a file object (not a path) it at least keeps the
    file's ``OSError`` as the context, which is raised instead.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save({"format": FORMAT, **state}, f)
        except RuntimeError as e:
            if not isinstance(e.__context__, OSError):
                raise
            raise e.__context__ from None


def remove_temp_files(folder: str | os.PathLike, targets: re.Pattern[str]) -> list[Path]:
    """Delete the temporary files that an interrupted atomic write of a file named like ``targets``
    left in ``folder`` (``.<name>.<random>.tmp``, see :func:`stnet.fileio.atomic_path`); nothing else
    is touched. Only safe while holding the folder's lock (another live run's writes look the same).
    Returns the files removed."""
    pattern = re.compile(rf"\.(?:{targets.pattern})\.[a-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if pattern.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unsafe_load_reason(e: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused or failed, in one clause for the user.

    Torch's own message is many lines long and advises retrying with ``weights_only=False``, which
    would run whatever code the file carries; stnet never does that, so the advice is never shown."""
    text = _ANSI.sub("", str(e))
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return (
            f"it holds pickled Python objects, not only tensors (it calls {refused.group(1)}); stnet "
            "never runs code from a file"
        )
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"it is not a plain tensor file ({_first_sentence(detail)}); stnet never runs code from a file"
    if "TorchScript archive" in text:
        return "it is a TorchScript archive (a model with code), not a weight file"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return f"{type(e).__name__}: {_first_sentence(lines[0])}" if lines else type(e).__name__


def _first_sentence(text: str) -> str:
    return text.split(". ", 1)[0].rstrip(".")


def torch_load_safely(source: str | os.PathLike | bytes, *, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors, numbers, strings and containers only: no code
    runs). Raises ``ValueError`` with :func:`unsafe_load_reason` as its message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "dispatching to torch.jit.load" before refusing it
            if isinstance(source, bytes):
                return torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:
        raise
    except Exception as e:
        raise ValueError(unsafe_load_reason(e)) from None


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint` (no code runs on load).

    ``mmap=True`` maps the tensors instead of reading them: only those used are ever read from disk
    (a config, or the model without the optimizer state)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch_load_safely(path, mmap=mmap)
    except ValueError as e:
        raise CheckpointError(f"{path} is not a readable stnet checkpoint: {e}") from None
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an stnet training checkpoint (to start from weights only, use --finetune)"
        )
    return state


class CheckpointDir:
    """``last.pt``, ``best.pt`` and periodic ``stnet-<epoch>.pt`` files, the newest ``keep`` of them kept."""

    def __init__(self, directory: str | os.PathLike, keep: int):
        self.dir = Path(directory)
        self.keep = keep

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    def periodic(self) -> list[Path]:
        """Periodic checkpoints, oldest first."""
        found = [(int(m.group(1)), p) for p in self.dir.glob("stnet-*.pt") if (m := _PERIODIC.match(p.name))]
        return [p for _, p in sorted(found)]

    def save_periodic(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.dir / f"stnet-{epoch:04d}.pt"
        save_checkpoint(path, state)
        for old in self.periodic()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path
