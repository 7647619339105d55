"""``stnet eval``: a checkpoint over a split, with multi-view testing and every report a reviewer needs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from stnet.checkpoint import CheckpointError, load_checkpoint
from stnet.config import Config, load_config
from stnet.datasets import build_dataset, build_loader, eval_views
from stnet.distributed import DistInfo
from stnet.engine import autocast_dtype, evaluate
from stnet.fileio import atomic_write_bytes
from stnet.metrics import EvalResult
from stnet.model import FrozenCompiled, build_model, to_channels_last
from stnet.weights import WeightsError, load_weights

MODEL_KEYS = ("depth", "class_num", "T", "N", "xception", "stem_pool", "dropout")


def read_training_checkpoint(path: str | Path) -> dict | None:
    """The contents of an stnet training checkpoint (which carries its config), None for weight files."""
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # not a torch zip archive: MindSpore .ckpt, safetensors, ...
            return None
    try:
        return load_checkpoint(path, mmap=True)  # read twice (config, then model): tensors read once
    except CheckpointError:
        return None


def checkpoint_config(checkpoint: str | Path, config: str | None, overrides: Sequence[str]) -> Config:
    """The config to use a checkpoint with: defaults ← the training checkpoint's own config (if it is
    one: its data settings, dataset_path, ...) ← the ``--config`` file ← ``--key value`` overrides."""
    saved = read_training_checkpoint(checkpoint) if Path(checkpoint).is_file() else None
    return load_config(config, list(overrides), base=saved["config"] if saved else None)


def model_for_checkpoint(
    path: str | Path, cfg: Config, log=print
) -> tuple[nn.Module, Config, list[str] | None]:
    """The model a checkpoint holds, the config it goes with, and its class names if it knows them.

    An stnet training checkpoint brings its own architecture (the config's model keys are replaced by
    the checkpoint's) and class names; any other weight file is loaded into the model ``cfg``
    describes, and must be a whole StNet."""
    if not Path(path).is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    saved = read_training_checkpoint(path)
    if saved is not None:
        arch = {k: saved["config"][k] for k in MODEL_KEYS if k in saved["config"]}
        changed = {k: v for k, v in arch.items() if getattr(cfg, k) != v}
        if changed:
            log("using the checkpoint's model settings: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
            cfg = dataclasses.replace(cfg, **arch)
        model = build_model(cfg)
        model.load_state_dict(saved["model"])
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


def run_eval(
    cfg: Config,
    checkpoint: str | Path,
    *,
    split: str = "val",
    clips: int = 1,
    crops: int = 1,
    out_dir: str | Path | None = None,
    dist: DistInfo | None = None,
    log=print,
    skip_unreadable: bool = False,
) -> EvalOutputs:
    """Evaluate ``checkpoint`` on ``split`` with ``clips`` × ``crops`` views per video; write the reports
    (rank 0: the other ranks' ``result`` is None). Unreadable videos are misses unless skipped."""
    from stnet.distributed import process_device
    from stnet.runtime import resolve_device

    dist = dist or DistInfo()
    device = process_device(resolve_device(cfg.device), dist)
    say = log if dist.is_main else (lambda _m: None)
    model, cfg, ckpt_classes = model_for_checkpoint(checkpoint, cfg, say)
    dataset = build_dataset(cfg, split, test_views=eval_views(clips, crops))
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
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval-{Path(checkpoint).stem}-{split}"
    if result is not None:
        classes = dataset.classes or ckpt_classes or [str(i) for i in range(cfg.class_num)]
        _write_reports(result, classes, out, split, checkpoint)
    return EvalOutputs(result, out)


def _write_reports(result: EvalResult, classes: list[str], out: Path, split: str, checkpoint) -> None:
    from stnet.plots import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    result.write_per_class_csv(out / "per_class.csv", classes)
    result.save_npz(out / "scores.npz", classes)
    plot_confusion(result.confusion, classes, out / "confusion.png")
    summary = {"checkpoint": str(checkpoint), "split": split, **result.to_json()}
    atomic_write_bytes(out / "eval.json", json.dumps(summary, indent=2).encode())
