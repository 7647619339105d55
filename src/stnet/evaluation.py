"""``stnet eval``: a checkpoint over a split, with multi-view testing and every report a reviewer needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stnet.checkpoint import model_for_checkpoint
from stnet.config import Config
from stnet.datasets import build_dataset, class_mismatch, eval_views
from stnet.distributed import DistInfo
from stnet.engine import evaluate
from stnet.errors import DataError, StnetError, os_error_line
from stnet.fileio import atomic_write_bytes, check_writable_folder
from stnet.loader import build_loader
from stnet.metrics import EvalResult
from stnet.model import FrozenCompiled, to_channels_last
from stnet.runtime import autocast_dtype, log_stderr


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
