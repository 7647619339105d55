"""Evaluation metrics: top-k accuracy, video-level multi-view scoring, per-class results.

Video-level evaluation sees each video through several *views* (K temporal clips × crops), possibly in
different batches and on different ranks. :class:`ScoreAccumulator` keeps one score row per
``(video id, view id)``, so the duplicates that ``DistributedSampler`` pads a rank's share with are
counted once, and averages each video's views at the end (softmax probabilities by default, as TSN and
Paddle's StNet test do). :class:`EvalResult` holds the numbers and writes the report files.

Ties between classes are broken towards the lower class index everywhere (the order of ``argmax``), so
top-1 is always the accuracy of the predictions in the confusion matrix.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stnet.errors import StnetError
from stnet.fileio import atomic_path

AVERAGES = ("softmax", "logits")
_STATE_KEYS = ("num_classes", "video_ids", "view_ids", "scores", "labels")


class MetricsError(StnetError, ValueError):
    """Scores or labels that cannot be evaluated (conflicting labels, wrong shapes, NaN scores)."""


def _to_numpy(x: Tensor | np.ndarray | Sequence[Any]) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()  # numpy has no bfloat16
        return x.cpu().numpy()
    return np.asarray(x)


def _int_array(x: Tensor | np.ndarray | Sequence[int], name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise MetricsError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64).reshape(-1)


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> None:
    if labels.shape != (n,):
        raise MetricsError(f"labels must have shape ({n},) to match the scores, got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise MetricsError(f"label {bad} is outside [0, {num_classes}) for {num_classes}-class scores")


def _label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of each true class in its row sorted by descending score, ties to the lower index."""
    true = scores[np.arange(len(labels)), labels][:, None]
    lower = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > true).sum(axis=1) + ((scores == true) & lower).sum(axis=1)


def topk_correct(
    scores: Tensor | np.ndarray, labels: Tensor | np.ndarray | Sequence[int], ks: Iterable[int] = (1, 5)
) -> dict[int, int]:
    """Number of rows whose label is among the ``k`` highest scores, for each ``k`` (clipped to C).

    Tensors stay on their device (one synchronisation for all ``ks``); the keys are the ``ks`` as given.
    """
    ks = tuple(ks)
    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if scores.ndim != 2:
        raise MetricsError(f"scores must have shape (n, num_classes), got {tuple(scores.shape)}")
    n, num_classes = scores.shape
    if isinstance(scores, Tensor):
        s = scores.detach()
        y = torch.as_tensor(labels, device=s.device).long().reshape(-1)
        _check_labels(y.cpu().numpy(), n, num_classes)
        true = s.gather(1, y[:, None])
        lower = torch.arange(num_classes, device=s.device)[None, :] < y[:, None]
        ranks = (s > true).sum(1) + ((s == true) & lower).sum(1)
        counts = torch.stack([(ranks < min(k, num_classes)).sum() for k in ks]).tolist() if ks else []
        return dict(zip(ks, (int(c) for c in counts), strict=True))
    y = _int_array(labels, "labels")
    _check_labels(y, n, num_classes)
    ranks = _label_ranks(np.asarray(scores), y)
    return {k: int((ranks < min(k, num_classes)).sum()) for k in ks}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for large logits."""
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


@dataclass(eq=False)
class EvalResult:
    """Video-level results: each video's views averaged into one score row.

    ``top1``/``top5``/``mean_class_accuracy`` are fractions. ``per_class`` is each class's recall (nan for
    classes without videos); ``mean_class_accuracy`` averages it over the classes that have videos.
    ``confusion[i, j]`` counts videos of class i predicted as j. Rows of ``scores``, ``labels``,
    ``video_ids`` and ``num_views`` are in increasing video id.
    """

    num_videos: int
    top1: float
    top5: float
    mean_class_accuracy: float
    per_class: np.ndarray
    confusion: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray
    num_views: np.ndarray
    average: str = "softmax"
    unreadable: int = 0  # videos that could not be read and so were not evaluated

    @classmethod
    def from_scores(
        cls,
        scores: np.ndarray,
        labels: np.ndarray | Sequence[int],
        video_ids: np.ndarray | Sequence[int] | None = None,
        num_views: np.ndarray | Sequence[int] | None = None,
        average: str = "softmax",
    ) -> EvalResult:
        """Metrics of one (already averaged) score row per video, e.g. re-scored or fused saved scores."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
            raise MetricsError(f"no videos to evaluate (scores of shape {scores.shape})")
        n, num_classes = scores.shape
        labels = _int_array(labels, "labels")
        _check_labels(labels, n, num_classes)
        ids = np.arange(n, dtype=np.int64) if video_ids is None else _int_array(video_ids, "video_ids")
        views = np.ones(n, dtype=np.int64) if num_views is None else _int_array(num_views, "num_views")
        if ids.shape != (n,) or views.shape != (n,):
            raise MetricsError(f"video_ids and num_views must have shape ({n},)")
        ranks = _label_ranks(scores, labels)
        pred = scores.argmax(axis=1)
        confusion = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
        confusion = confusion.reshape(num_classes, num_classes).astype(np.int64)
        videos = confusion.sum(axis=1)
        present = videos > 0
        per_class = np.full(num_classes, np.nan)
        per_class[present] = np.diag(confusion)[present] / videos[present]
        return cls(
            num_videos=n,
            top1=float((ranks < 1).mean()),
            top5=float((ranks < min(5, num_classes)).mean()),
            mean_class_accuracy=float(per_class[present].mean()),
            per_class=per_class,
            confusion=confusion,
            scores=scores,
            labels=labels,
            video_ids=ids,
            num_views=views,
            average=average,
        )

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class of each video (argmax of its averaged scores)."""
        return self.scores.argmax(axis=1)

    def _views_text(self) -> str:
        lo, hi = int(self.num_views.min()), int(self.num_views.max())
        if hi == 1:
            return "1 view each"
        count = f"{lo} views each" if lo == hi else f"{lo} to {hi} views each"
        return f"{count}, {self.average}-averaged"

    def summary_line(self) -> str:
        """One human line: ``top1 71.23% top5 90.01% mean-class 70.50% over 1234 videos (…)``."""
        return (
            f"top1 {100 * self.top1:.2f}% top5 {100 * self.top5:.2f}% "
            f"mean-class {100 * self.mean_class_accuracy:.2f}% "
            f"over {self.num_videos} videos ({self._views_text()})"
            + (f"; {self.unreadable} unreadable videos left out" if self.unreadable else "")
        )

    def reference_line(self, ckpt: str | os.PathLike) -> str:
        """The MindSpore reference's ``print("result:", res, "ckpt=", path)`` line, for comparing logs."""
        return f"result: { ({'top_1_accuracy': float(self.top1)}) } ckpt= {os.fspath(ckpt)}"

    def to_json(self) -> dict[str, Any]:
        """The metrics as JSON-able values (no scores); classes without videos have accuracy ``None``."""
        return {
            "num_videos": self.num_videos,
            "unreadable_videos": self.unreadable,
            "num_classes": self.num_classes,
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "average": self.average,
            "views_per_video": {
                "min": int(self.num_views.min()),
                "max": int(self.num_views.max()),
                "mean": float(self.num_views.mean()),
            },
            "per_class_accuracy": [None if math.isnan(a) else float(a) for a in self.per_class],
        }

    def _class_names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        names = [str(name) for name in class_names]
        if len(names) != self.num_classes:
            raise MetricsError(f"got {len(names)} class names for {self.num_classes}-class scores")
        return names

    def write_per_class_csv(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> None:
        """``class_index,class_name,videos,correct,accuracy`` per class (accuracy empty without videos)."""
        names = self._class_names(class_names)
        videos = self.confusion.sum(axis=1)
        correct = np.diag(self.confusion)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class_index", "class_name", "videos", "correct", "accuracy"])
        for i, name in enumerate(names):
            acc = "" if videos[i] == 0 else f"{correct[i] / videos[i]:.6f}"
            writer.writerow([i, name, int(videos[i]), int(correct[i]), acc])
        with atomic_path(path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")

    def save_npz(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> None:
        """Averaged scores, labels, video ids, views and class names, loadable without pickle."""
        names = self._class_names(class_names)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez would add ".npz"
            np.savez(
                f,
                scores=self.scores,
                labels=self.labels,
                video_ids=self.video_ids,
                num_views=self.num_views,
                class_names=np.array(names, dtype=str),
                average=np.array(self.average),
            )


def load_npz(path: str | os.PathLike) -> tuple[EvalResult, list[str]]:
    """Read back what :meth:`EvalResult.save_npz` wrote: the result (recomputed) and the class names."""
    with np.load(Path(path), allow_pickle=False) as data:
        missing = {"scores", "labels", "video_ids", "num_views", "class_names"} - set(data.files)
        if missing:
            raise MetricsError(f"{path}: not an stnet score file (missing {', '.join(sorted(missing))})")
        average = str(data["average"]) if "average" in data.files else "softmax"
        result = EvalResult.from_scores(
            data["scores"], data["labels"], data["video_ids"], data["num_views"], average=average
        )
        return result, [str(name) for name in data["class_names"]]


class ScoreAccumulator:
    """Collects per-view logits of videos and averages them per video.

    ``add`` keeps the first score it is given for each ``(video id, view id)`` and ignores repeats
    (DistributedSampler pads ranks with duplicates). Each rank's ``state()`` is plain numpy, meant for
    ``torch.distributed.all_gather_object``; rebuild with ``from_state`` and ``merge`` them. Scores are
    kept as float32 logits, one row per view: ``views × videos × classes × 4`` bytes.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self._labels: dict[int, int] = {}
        self._seen: set[tuple[int, int]] = set()
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def num_videos(self) -> int:
        return len(self._labels)

    @property
    def num_scores(self) -> int:
        """Number of distinct (video, view) score rows kept."""
        return len(self._seen)

    def add(
        self,
        video_ids: Tensor | np.ndarray | Sequence[int],
        scores: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | Sequence[int],
        view_ids: Tensor | np.ndarray | Sequence[int] | int = 0,
    ) -> None:
        """Add one batch: ``scores`` (n, C) logits of views ``view_ids`` of videos ``video_ids``."""
        logits = _to_numpy(scores).astype(np.float32)
        if logits.ndim != 2:
            raise MetricsError(f"scores must have shape (n, num_classes), got {logits.shape}")
        n, num_classes = logits.shape
        if self.num_classes not in (None, num_classes):
            raise MetricsError(f"scores have {num_classes} classes, earlier ones had {self.num_classes}")
        vids = _int_array(video_ids, "video_ids")
        views = _int_array(view_ids, "view_ids")
        if np.ndim(view_ids) == 0:  # one view id for the whole batch
            views = np.full(n, views[0], np.int64)
        if vids.shape != (n,) or views.shape != (n,):
            raise MetricsError(f"video_ids and view_ids must have shape ({n},) to match the scores")
        labs = _int_array(labels, "labels")
        _check_labels(labs, n, num_classes)
        if not np.isfinite(logits).all():
            raise MetricsError("the scores contain NaN or inf (has training diverged?)")
        keep = self._new_rows(vids.tolist(), views.tolist(), labs.tolist())
        self.num_classes = num_classes
        if keep:
            self._chunks.append((vids[keep], views[keep], logits[keep], labs[keep]))

    def _new_rows(self, vids: list[int], views: list[int], labels: list[int]) -> list[int]:
        """Indices of rows not seen before; checks every label before changing anything."""
        new_labels: dict[int, int] = {}
        for v, y in zip(vids, labels, strict=True):
            known = self._labels.get(v, new_labels.get(v))
            if known is not None and known != y:
                raise MetricsError(f"video {v} was given label {y}, but earlier label {known}")
            new_labels[v] = y
        keep = []
        for i, key in enumerate(zip(vids, views, strict=True)):
            if key not in self._seen:
                self._seen.add(key)
                keep.append(i)
        self._labels.update(new_labels)
        return keep

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        c = self.num_classes or 0
        if not self._chunks:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros((0, c), np.float32), empty
        if len(self._chunks) > 1:  # compact, so repeated state()/result() calls stay cheap
            self._chunks = [tuple(np.concatenate(part) for part in zip(*self._chunks, strict=True))]  # type: ignore[list-item]
        return self._chunks[0]

    def state(self) -> dict[str, Any]:
        """Plain numpy arrays (and ``num_classes``), one row per kept (video, view)."""
        vids, views, logits, labels = self._arrays()
        return {
            "num_classes": self.num_classes,
            "video_ids": vids,
            "view_ids": views,
            "scores": logits,
            "labels": labels,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ScoreAccumulator:
        """Rebuild an accumulator from :meth:`state` (e.g. another rank's)."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise MetricsError(f"not a ScoreAccumulator state: missing {', '.join(missing)}")
        acc = cls(state["num_classes"])
        if len(state["video_ids"]):
            acc.add(state["video_ids"], state["scores"], state["labels"], state["view_ids"])
        return acc

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """Add ``other``'s scores to this one (repeated (video, view) counted once); returns ``self``."""
        if other.num_classes is not None and self.num_classes not in (None, other.num_classes):
            raise MetricsError(
                f"cannot merge {other.num_classes}-class scores into {self.num_classes}-class ones"
            )
        vids, views, logits, labels = other._arrays()
        if len(vids):
            self.add(vids, logits, labels, views)
        elif self.num_classes is None:
            self.num_classes = other.num_classes
        return self

    def result(self, average: str = "softmax") -> EvalResult:
        """Video-level results: each video's views averaged as softmax probabilities or as logits."""
        if average not in AVERAGES:
            raise ValueError(f"average: {average!r} is not allowed; use one of {', '.join(AVERAGES)}")
        vids, views, logits, labels = self._arrays()
        if not len(vids):
            raise MetricsError("no videos were evaluated")
        order = np.lexsort((views, vids))
        vids, logits, labels = vids[order], logits[order], labels[order]
        ids, starts, counts = np.unique(vids, return_index=True, return_counts=True)
        rows = softmax(logits) if average == "softmax" else logits.astype(np.float64)
        mean = np.add.reduceat(rows, starts, axis=0) / counts[:, None]
        return EvalResult.from_scores(mean, labels[starts], ids, counts, average=average)
