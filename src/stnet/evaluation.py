"""``stnet eval``: a checkpoint over a split, with multi-view testing and every report a reviewer needs."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from stnet.checkpoint import CheckpointError, load_checkpoint
from stnet.config import (
    WEIGHT_KEYS,
    Config,
    apply_overrides,
    load_config,
    parse_cli_overrides,
    read_yaml,
    resolve_config_path,
)
from stnet.datasets import build_dataset, build_loader, class_mismatch, eval_views
from stnet.distributed import DistInfo
from stnet.engine import autocast_dtype, evaluate
from stnet.errors import ConfigError, DataError, StnetError, os_error_line
from stnet.fileio import atomic_write_bytes, check_writable_folder
from stnet.metrics import EvalResult
from stnet.model import FrozenCompiled, build_model, to_channels_last
from stnet.weights import WeightsError, fit_state_dict, load_weights, read_described_weights


def log_stderr(message: str) -> None:
    """Logs and progress go to stderr: stdout carries only results (``--json``: only JSON)."""
    print(message, file=sys.stderr, flush=True)


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


@dataclass
class EvalOutputs:
    result: EvalResult | None  # None on ranks other than 0
    out_dir: Path
    report_error: str | None = None  # why the reports could not be written (the metrics still stand)


def run_eval(
    cfg: Config,
    checkpoint: str | Path,
    *,
    split: str = "val",
    clips: int = 1,
    crops: int = 1,
    out_dir: str | Path | None = None,
    dist: DistInfo | None = None,
    log: Callable[[str], None] = log_stderr,
    skip_unreadable: bool = False,
) -> EvalOutputs:
    """Evaluate ``checkpoint`` on ``split`` with ``clips`` × ``crops`` views per video; write the reports
    (rank 0: the other ranks' ``result`` is None). Unreadable videos are misses unless skipped.

    Every split is read with the eval transforms (the split only chooses the list). The report folder
    is checked to be writable before evaluating; if writing the reports fails all the same, the
    result comes back with ``report_error`` set."""
    from stnet.distributed import process_device
    from stnet.runtime import resolve_device

    dist = dist or DistInfo()
    device = process_device(resolve_device(cfg.device), dist)
    say = log if dist.is_main else (lambda _m: None)
    model, cfg, ckpt_classes = model_for_checkpoint(checkpoint, cfg, say)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval-{Path(checkpoint).stem}-{split}"
    if dist.is_main:
        check_writable_folder(out, "the evaluation reports")
    dataset = build_dataset(
        cfg,
        split,
        test_views=eval_views(clips, crops),
        augment=False,
        model_source=str(checkpoint) if ckpt_classes is not None else None,
    )
    if dataset.classes is not None and ckpt_classes is not None:
        mismatch = class_mismatch(dataset.classes, ckpt_classes)
        if mismatch:
            raise DataError(f"{mismatch}; labels would not match (model: {checkpoint})")
    views = clips * crops
    model = model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    if cfg.compile:
        model = FrozenCompiled(model)
    loader = build_loader(dataset, cfg, dist, device, train=False, batch_size=max(1, cfg.batch_size // views))
    result = evaluate(
        model,
        loader,
        device=device,
        dist=dist,
        amp_dtype=autocast_dtype(cfg.precision, device),
        desc=f"eval {split}",
        skip_unreadable=skip_unreadable,
    )
    report_error = None
    if result is not None:
        classes = dataset.classes or ckpt_classes or [str(i) for i in range(cfg.class_num)]
        try:
            _write_reports(result, classes, out, split, checkpoint)
        except OSError as e:
            report_error = os_error_line(e, doing="writing reports to")
        except StnetError as e:
            report_error = str(e)
    return EvalOutputs(result, out, report_error)


def _write_reports(result: EvalResult, classes: list[str], out: Path, split: str, checkpoint) -> None:
    from stnet.plots import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    result.write_per_class_csv(out / "per_class.csv", classes)
    result.save_npz(out / "scores.npz", classes)
    plot_confusion(result.confusion, classes, out / "confusion.png")
    summary = {"checkpoint": str(checkpoint), "split": split, **result.to_json()}
    atomic_write_bytes(out / "eval.json", json.dumps(summary, indent=2).encode())
