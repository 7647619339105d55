"""``stnet infer`` (an exported model over a prepared split, with the reference's accuracy line and
latency) and ``stnet predict`` (class probabilities for video files).

Both read clips through the same datasets and eval sampling as ``stnet eval``; ``infer`` even runs the
same evaluation loop (:func:`stnet.engine.evaluate`), so its accuracy equals ``stnet eval``'s of the
checkpoint the file was exported from, up to the backend's numerical noise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stnet.config import Config
from stnet.datasets import (
    ClipSpec,
    Sample,
    VideoClipDataset,
    build_dataset,
    class_mismatch,
    eval_views,
)
from stnet.distributed import DistInfo
from stnet.engine import evaluate
from stnet.errors import DataError, StnetError, os_error_line
from stnet.fileio import atomic_write_bytes, check_writable_folder
from stnet.loader import build_loader
from stnet.metrics import EvalResult, softmax
from stnet.runners import ExportError, ModelInfo, Runner, class_names_for
from stnet.video import VIDEO_SUFFIXES, is_video_file, open_video

ACC_LOG = "acc.log"


# ----------------------------------------------------------------------------------------------------
# A checkpoint as a Runner, so `predict` treats both the same
# ----------------------------------------------------------------------------------------------------


def checkpoint_runner(
    checkpoint: str | Path, cfg: Config, classes_file: str | Path | None = None, log=None
) -> Runner:
    """Run a checkpoint (stnet training checkpoint, stnet weights or a reference MindSpore StNet) in
    PyTorch fp32 on the configured device, described by the same :class:`ModelInfo` an export carries."""
    from stnet.checkpoint import model_for_checkpoint
    from stnet.runtime import log_stderr, resolve_device

    model, cfg, classes = model_for_checkpoint(checkpoint, cfg, log or log_stderr)
    info = ModelInfo.from_config(cfg, class_names_for(cfg, classes, classes_file))
    device = resolve_device(cfg.device)
    model = model.to(device).eval()

    @torch.no_grad()
    def run(clips: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(clips).to(device)).float().cpu().numpy()

    return Runner(info, "checkpoint", run, f"torch {torch.__version__} eager fp32 on {device}")


# ----------------------------------------------------------------------------------------------------
# stnet infer
# ----------------------------------------------------------------------------------------------------


class _TimedRunner(nn.Module):
    """A Runner as an ``nn.Module`` for :func:`stnet.engine.evaluate`, timing every call."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner
        self.per_clip_s: list[float] = []
        self.clips = 0
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = x.numpy()
        start = time.perf_counter()
        logits = self.runner(clips)
        elapsed = time.perf_counter() - start
        self.per_clip_s.append(elapsed / len(clips))
        self.clips += len(clips)
        self.seconds += elapsed
        return torch.from_numpy(logits)


@dataclass
class Latency:
    mean_ms: float
    p50_ms: float
    p99_ms: float
    clips_per_s: float  # clips over model time alone
    end_to_end_clips_per_s: float  # including reading and preprocessing

    @classmethod
    def measure(cls, timed: _TimedRunner, wall_s: float) -> Latency:
        ms = np.asarray(timed.per_clip_s) * 1000
        return cls(
            float(ms.mean()),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            timed.clips / timed.seconds,
            timed.clips / wall_s,
        )


@dataclass
class InferReport:
    result: EvalResult
    latency: Latency
    lines: list[str]
    out_dir: Path
    summary: dict[str, Any]  # what infer.json holds
    report_error: str | None = None  # why acc.log/infer.json could not be written (the numbers stand)


def accuracy_lines(result: EvalResult) -> list[str]:
    """The reference's ``top1_correct=N, tot=M, acc=XX.XX%`` line, and the same for top-5; with
    unreadable videos, ``, unreadable=K, counted as misses`` (or left out) at the end of each."""
    bad = result.unreadable_text()
    return [
        f"top{k}_correct={result.topk_correct(k)}, tot={result.num_videos}, acc={100 * acc:.2f}%"
        + (f", {bad}" if bad else "")
        for k, acc in ((1, result.top1), (5, result.top5))
    ]


def _check_classes(dataset: VideoClipDataset, info: ModelInfo) -> None:
    mismatch = class_mismatch(dataset.classes, info.class_names) if dataset.classes is not None else None
    if mismatch:
        raise DataError(f"{mismatch}; labels would not match")


def run_infer(
    runner: Runner,
    dataset_path: str | Path,
    *,
    split: str = "val",
    clips: int = 1,
    crops: int = 1,
    batch_size: int = 1,
    workers: int = 2,
    out_dir: str | Path,
    model_name: str = "model",
    skip_unreadable: bool = False,
    log: Callable[[str], None] | None = None,
) -> InferReport:
    """Run ``runner`` over every video of ``split`` (eval transforms for any split); write ``acc.log``
    and ``infer.json`` to ``out_dir``, which is checked to be writable first. If writing fails all the
    same, the report comes back with ``report_error`` set. ``log`` gets the backend line
    (:meth:`Runner.describe`) once the inputs are checked, before the run."""
    info = runner.info
    cfg = info.config(dataset_path=str(dataset_path), workers=workers, batch_size=batch_size)
    out = check_writable_folder(out_dir, "the inference reports")
    dataset = build_dataset(cfg, split, test_views=eval_views(clips, crops), augment=False)
    _check_classes(dataset, info)
    loader = build_loader(dataset, cfg, DistInfo(), torch.device("cpu"), train=False, batch_size=batch_size)
    if log is not None:
        log(runner.describe())
    timed = _TimedRunner(runner)
    warm = np.zeros((batch_size * clips * crops, info.T, 3 * info.N, info.size, info.size), np.float32)
    runner(warm)  # the first call initialises the runtime: keep it out of the latency
    start = time.perf_counter()
    result = evaluate(
        timed,
        loader,
        device=torch.device("cpu"),
        dist=DistInfo(),
        desc=f"infer {split}",
        skip_unreadable=skip_unreadable,
    )
    assert result is not None  # one process: rank 0
    latency = Latency.measure(timed, time.perf_counter() - start)
    lines = [
        *accuracy_lines(result),
        f"latency per clip: mean {latency.mean_ms:.2f} ms, p50 {latency.p50_ms:.2f} ms, "
        f"p99 {latency.p99_ms:.2f} ms; {latency.clips_per_s:.1f} clips/s in the model, "
        f"{latency.end_to_end_clips_per_s:.1f} clips/s end to end",
        f"{model_name} ({runner.backend}) on the {split} split of {dataset_path}: {result.num_videos} "
        f"videos, {clips} clip(s) x {crops} crop(s) each, batch {batch_size}"
        + (f"; {result.unreadable_text()}" if result.unreadable else ""),
    ]
    summary = {
        "model": model_name,
        "backend": runner.backend,
        "split": split,
        **result.to_json(),
        "latency_ms": {"mean": latency.mean_ms, "p50": latency.p50_ms, "p99": latency.p99_ms},
        "clips_per_s": latency.clips_per_s,
        "end_to_end_clips_per_s": latency.end_to_end_clips_per_s,
        "batch_size": batch_size,
    }
    report_error = None
    try:
        atomic_write_bytes(out / ACC_LOG, ("\n".join(lines) + "\n").encode())
        atomic_write_bytes(out / "infer.json", json.dumps(summary, indent=2).encode())
    except OSError as e:
        report_error = os_error_line(e, doing="writing reports to")
    except StnetError as e:
        report_error = str(e)
    return InferReport(result, latency, lines, out, summary, report_error)


# ----------------------------------------------------------------------------------------------------
# stnet predict
# ----------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    video: Path
    top: list[tuple[str, int, float]] | None = None  # (class name, index, probability), best first
    error: str | None = None
    frames: tuple[int, int] | None = None  # (decoded, announced) when decoding stopped before the end

    @property
    def warning(self) -> str | None:
        """'decoded K of N frames' when the video ended before the frames its file announces."""
        if self.frames is None:
            return None
        decoded, announced = self.frames
        return f"{self.video}: decoded {decoded} of {announced} frames (truncated or corrupt file?)"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"video": str(self.video)}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["top"] = [{"class": name, "index": i, "prob": round(p, 6)} for name, i, p in self.top or []]
        if self.frames is not None:
            out["warning"] = self.warning
            out["decoded_frames"], out["announced_frames"] = self.frames
        return out

    def line(self) -> str:
        return f"{self.video}: " + ", ".join(f"{name} {p:.3f}" for name, _i, p in self.top or [])


def find_videos(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each path given; for a directory, every video file under it (recursively, sorted), or the
    directory itself when it holds none (:func:`predict` reports it)."""
    for path in map(Path, paths):
        if path.is_dir():
            found = False
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if is_video_file(name):
                        found = True
                        yield Path(root) / name
            if not found:
                yield path
        else:
            yield path


def _short_decode(dataset: VideoClipDataset, video: Path) -> tuple[int, int] | None:
    """``(decoded, announced)`` frames when decoding ``video`` stopped before the frame count its
    header announces (or, without one, its packets); None when it decoded to the end."""
    used = dataset.frame_count(video)
    if used is None:
        return None
    with open_video(video) as container:
        announced = int(container.streams.video[0].frames or 0)
    if not announced:
        from stnet.video import count_packets

        announced = count_packets(video)
    if used >= announced:
        return None
    decoded = _decodable_frames(video)  # only for a short file: the exact count, for the message
    return (decoded, announced) if decoded < announced else None


def _decodable_frames(video: Path) -> int:
    import av

    count = 0
    with open_video(video) as container:
        try:
            for _frame in container.decode(container.streams.video[0]):
                count += 1
        except (av.error.FFmpegError, OSError):
            pass
    return count


def predict(
    runner: Runner,
    paths: Iterable[str | Path],
    *,
    topk: int = 5,
    clips: int = 1,
    crops: int = 1,
    strict: bool = False,
) -> Iterator[Prediction]:
    """Class probabilities (softmax averaged over clips × crops views) for every video of ``paths``,
    sampled with the model's eval recipe (its resize mode included).

    A video that cannot be read, or a folder without videos, yields a Prediction with ``error`` set;
    the others go on. A video whose decoding stopped before its announced end is answered from the
    frames that decoded, with ``frames`` set (the warning); ``strict`` makes that an error."""
    info = runner.info
    spec = ClipSpec.from_config(info.config())
    k = max(1, min(topk, info.num_classes))
    for video in find_videos(paths):
        if video.is_dir():
            kinds = ", ".join(sorted(VIDEO_SUFFIXES))
            yield Prediction(video, error=f"{video}: no video found in this folder (looked for {kinds})")
            continue
        if not video.is_file():
            yield Prediction(video, error=f"{video}: no such file")
            continue
        dataset = VideoClipDataset(
            [Sample(video, 0)], spec, "val", test_views=eval_views(clips, crops), augment=False
        )
        try:
            views, _, _, weights = dataset.distinct_views(0)  # identical views (short videos) run once
            short = _short_decode(dataset, video) if dataset.samples[0].kind == "video" else None
        except (DataError, OSError) as e:
            yield Prediction(video, error=str(e) if str(video) in str(e) else f"{video}: {e}")
            continue
        if short is not None and strict:
            decoded, announced = short
            message = f"{video}: decoded {decoded} of {announced} frames (truncated or corrupt file?); "
            yield Prediction(video, error=message + "--strict refuses it", frames=short)
            continue
        probs = view_probabilities(runner, views.numpy(), weights.numpy())
        yield Prediction(video, top_classes(probs, info.class_names, k), frames=short)


def view_probabilities(runner: Runner, views: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The class probabilities of one clip's distinct ``views`` (D, T, 3N, S, S), each standing for
    ``weights`` (D,) of its views: the softmax averaged over all of them (what ``predict`` prints for a
    video and ``predict --timeline`` for a window)."""
    w = weights[:, None]
    return (softmax(runner(views)) * w).sum(axis=0) / w.sum()


def top_classes(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[tuple[str, int, float]]:
    """The ``k`` most probable classes, best first (ties by index): (name, index, probability)."""
    best = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], int(i), float(probs[i])) for i in best]


def open_model(
    model: str | None,
    checkpoint: str | None,
    *,
    config: str | None = None,
    overrides: Sequence[str] = (),
    classes_file: str | None = None,
    threads: int | None = None,
    trust_model: bool = False,
    backend: str = "auto",
) -> Runner:
    """The Runner of ``--model`` (an export) or of ``--checkpoint`` (with ``--config`` and overrides),
    on ``backend`` (see :func:`stnet.runners.choose_backend`; a checkpoint runs in PyTorch).
    ``trust_model`` allows pt2/TorchScript exports, whose loading can run code (see ``load_exported``)."""
    from stnet.checkpoint import checkpoint_config
    from stnet.runners import choose_backend, load_exported

    if (model is None) == (checkpoint is None):
        raise ExportError("give exactly one of --model FILE (from stnet export) or --checkpoint FILE")
    if model is not None:
        if overrides:
            extra = " ".join(overrides)
            raise ExportError(f"unexpected arguments: {extra} (config flags go with --checkpoint)")
        return load_exported(model, threads, trust=trust_model, backend=backend)
    choice = choose_backend(backend, "checkpoint")
    if threads:
        torch.set_num_threads(threads)
    cfg = checkpoint_config(checkpoint, config, overrides)
    return dataclasses.replace(checkpoint_runner(checkpoint, cfg, classes_file), choice=choice)
