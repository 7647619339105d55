"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the model, optimizer and AMP scaler states, the epoch and step reached, the best
validation top-1, every random-number generator's state and the resolved config. It is a plain
``torch.save`` of tensors, numbers, strings and containers, so it loads with ``weights_only=True``
(no code runs on load).

Reading a model back from a checkpoint (or from any weight file) for eval, export and inference is
here too: :func:`checkpoint_config` and :func:`model_for_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stnet.config import (
    WEIGHT_KEYS,
    Config,
    apply_overrides,
    load_config,
    parse_cli_overrides,
    read_yaml,
    resolve_config_path,
)
from stnet.errors import ConfigError, OSFailure, StnetError
from stnet.fileio import TEMP_SUFFIX, atomic_path
from stnet.model import build_model
from stnet.runtime import log_stderr
from stnet.weights import (
    WeightsError,
    fit_state_dict,
    load_weights,
    read_described_weights,
    torch_load_safely,
)

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


def read_training_checkpoint(path: str | Path) -> dict | None:
    """The contents of an stnet training checkpoint (which carries its config), or of a converted
    .safetensors that carries one (:func:`~stnet.weights.read_described_weights`); None for weight files."""
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # not a torch zip archive: MindSpore .ckpt, safetensors, ...
            return read_described_weights(path)
    try:
        return load_checkpoint(path, mmap=True)  # read twice (config, then model): tensors read once
    except CheckpointError:
        return None


def checkpoint_config(checkpoint: str | Path, config: str | None, overrides: Sequence[str]) -> Config:
    """The config to use a checkpoint with: defaults ← the training checkpoint's own config (if it is
    one: its data settings, dataset_path, ...) ← the ``--config`` file ← ``--key value`` overrides.

    The keys that shape the weights (:data:`stnet.config.WEIGHT_KEYS`) are the training checkpoint's:
    a ``--config`` file or flag that sets one to another value is a ConfigError that says so. Every
    other key (T, sizes, sampling, batch, device, ...) can be overridden."""
    saved = read_training_checkpoint(checkpoint) if Path(checkpoint).is_file() else None
    if saved is None:
        return load_config(config, list(overrides))
    _refuse_weight_conflicts(checkpoint, saved["config"], config, overrides)
    return load_config(config, list(overrides), base=saved["config"])


def _in_file(path: Path, key: str, value: object) -> str:
    return f"{key}: {value} in {path}"


def _refuse_weight_conflicts(
    checkpoint: str | Path, saved: Mapping, config: str | None, overrides: Sequence[str]
) -> None:
    sources: list[tuple[dict, Callable[[str, object], str]]] = []
    if config:
        path = resolve_config_path(str(config))
        from_file: dict = {}
        apply_overrides(from_file, read_yaml(path), [])
        sources.append((from_file, functools.partial(_in_file, path)))
    if overrides:
        from_flags: dict = {}
        apply_overrides(from_flags, parse_cli_overrides(list(overrides)), [])
        sources.append((from_flags, lambda k, v: f"--{k} {v}"))
    for given, name in reversed(sources):  # the flags, which win over the file, are reported first
        for key in WEIGHT_KEYS:
            if key in given and key in saved and given[key] != saved[key]:
                raise ConfigError(
                    f"{name(key, given[key])} conflicts with the checkpoint {checkpoint}, whose weights "
                    f"have {key} {saved[key]}: {', '.join(WEIGHT_KEYS)} come from the checkpoint; "
                    f"drop the setting (T, sizes, clips, crops, batch and device can be changed)"
                )


def model_for_checkpoint(
    path: str | Path, cfg: Config, log: Callable[[str], None] = log_stderr
) -> tuple[nn.Module, Config, list[str] | None]:
    """The model a checkpoint holds, the config it goes with, and its class names if it knows them.

    An stnet training checkpoint brings the keys that shape its weights (the config's are replaced by
    the checkpoint's; :func:`checkpoint_config` refuses conflicting user settings) and its class
    names; T and every data setting stay ``cfg``'s. Any other weight file is loaded into the model
    ``cfg`` describes, and must be a whole StNet."""
    if not Path(path).is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    saved = read_training_checkpoint(path)
    if saved is not None:
        arch = {k: saved["config"][k] for k in WEIGHT_KEYS if k in saved["config"]}
        changed = {k: v for k, v in arch.items() if getattr(cfg, k) != v}
        if changed:
            log("using the checkpoint's model settings: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
            cfg = dataclasses.replace(cfg, **arch)
        model = build_model(cfg)
        if not isinstance(saved.get("model"), Mapping):
            raise WeightsError(f"{path}: a training checkpoint without model weights")
        # the saved config may not describe the tensors (an edited or crafted file): one line, not a traceback
        fitted, _ = fit_state_dict(model, saved["model"], path=str(path))
        model.load_state_dict(fitted)
        return model, cfg, saved.get("classes")
    model = build_model(cfg)
    if load_weights(model, path).kind != "stnet":
        raise WeightsError(
            f"{path} holds ImageNet backbone weights, not a trained StNet: nothing to evaluate"
        )
    return model, cfg, None


def eval_model(
    checkpoint: str | Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    classes_file: str | Path | None = None,
) -> tuple[nn.Module, Config, list[str]]:
    """The model of a checkpoint in eval mode (on the CPU), the config it goes with (defaults ← the
    checkpoint's ← ``config`` ← ``overrides``, see :func:`checkpoint_config`) and its class names."""
    from stnet.runners import class_names_for

    cfg = checkpoint_config(checkpoint, config, overrides)
    model, cfg, classes = model_for_checkpoint(checkpoint, cfg)
    return model.eval(), cfg, class_names_for(cfg, classes, classes_file)
