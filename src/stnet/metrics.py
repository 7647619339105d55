"""Evaluation metrics: top-k accuracy, video-level multi-view scoring, per-class results.

Video-level evaluation sees each video through several *views* (K temporal clips × crops), possibly in
different batches and on different ranks. :class:`ScoreAccumulator` averages each video's views as they
arrive (a running float32 sum of softmax probabilities per video, as TSN and Paddle's StNet test
average), keeping the first score of each ``(video id, view id)`` and ignoring repeats, so its memory
is one row per video however many views there are. :class:`EvalResult` holds the numbers and writes
the report files; listed videos that could not be read count as misses unless the caller skips them.

Ties between classes are broken towards the lower class index everywhere (the order of ``argmax``), so
top-1 is always the accuracy of the predictions in the confusion matrix.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stnet.errors import StnetError
from stnet.fileio import atomic_path

AVERAGES = ("softmax", "logits")
_STATE_KEYS = (
    "num_classes",
    "average",
    "video_ids",
    "labels",
    "weights",
    "sums",
    "view_masks",
    "unreadable_ids",
    "unreadable_labels",
)


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


def _softmax32(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (what the accumulator sums: float32 rows of probabilities in [0, 1])."""
    x = logits - logits.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def _empty_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(eq=False)
class EvalResult:
    """Video-level results: each video's views averaged into one score row.

    ``top1``/``top5``/``mean_class_accuracy`` are fractions over ``num_videos``: every listed video,
    the unreadable ones (``unreadable_ids``, with their labels, -1 where unknown) counted as misses, or
    only the evaluated ones when ``skip_unreadable``. ``per_class`` is each class's recall (nan for
    classes without videos; an unreadable video of unknown label counts in top-1/top-5 only);
    ``mean_class_accuracy`` averages it over the classes that have videos. ``confusion[i, j]`` counts
    evaluated videos of class i predicted as j. Rows of ``scores``, ``labels``, ``video_ids`` and
    ``num_views`` are the evaluated videos in increasing video id.
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
    unreadable_ids: np.ndarray = field(default_factory=_empty_ids)
    unreadable_labels: np.ndarray = field(default_factory=_empty_ids)
    skip_unreadable: bool = False

    @classmethod
    def from_scores(
        cls,
        scores: np.ndarray,
        labels: np.ndarray | Sequence[int],
        video_ids: np.ndarray | Sequence[int] | None = None,
        num_views: np.ndarray | Sequence[int] | None = None,
        average: str = "softmax",
        *,
        unreadable_ids: np.ndarray | Sequence[int] = (),
        unreadable_labels: np.ndarray | Sequence[int] | None = None,
        skip_unreadable: bool = False,
    ) -> EvalResult:
        """Metrics of one (already averaged) score row per video, e.g. re-scored or fused saved scores,
        and of the listed videos that could not be read (misses unless ``skip_unreadable``)."""
        scores = np.asarray(scores)
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
            raise MetricsError(f"no videos to evaluate (scores of shape {scores.shape})")
        n, num_classes = scores.shape
        labels = _int_array(labels, "labels")
        _check_labels(labels, n, num_classes)
        ids = np.arange(n, dtype=np.int64) if video_ids is None else _int_array(video_ids, "video_ids")
        views = np.ones(n, dtype=np.int64) if num_views is None else _int_array(num_views, "num_views")
        if ids.shape != (n,) or views.shape != (n,):
            raise MetricsError(f"video_ids and num_views must have shape ({n},)")
        bad_ids = _int_array(unreadable_ids, "unreadable_ids")
        bad_labels = (
            np.full(len(bad_ids), -1, np.int64)
            if unreadable_labels is None
            else _int_array(unreadable_labels, "unreadable_labels")
        )
        if bad_labels.shape != bad_ids.shape:
            raise MetricsError(f"unreadable_labels must have shape {bad_ids.shape} like unreadable_ids")
        known = bad_labels[bad_labels >= 0]
        if known.size and known.max() >= num_classes:
            raise MetricsError(
                f"label {known.max()} is outside [0, {num_classes}) for {num_classes}-class scores"
            )
        ranks = _label_ranks(scores, labels)
        pred = scores.argmax(axis=1)
        confusion = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
        confusion = confusion.reshape(num_classes, num_classes).astype(np.int64)
        videos = confusion.sum(axis=1)
        counted = n
        if not skip_unreadable:
            videos = videos + np.bincount(known, minlength=num_classes)
            counted += len(bad_ids)
        present = videos > 0
        per_class = np.full(num_classes, np.nan)
        per_class[present] = np.diag(confusion)[present] / videos[present]
        return cls(
            num_videos=counted,
            top1=float((ranks < 1).sum() / counted),
            top5=float((ranks < min(5, num_classes)).sum() / counted),
            mean_class_accuracy=float(per_class[present].mean()),
            per_class=per_class,
            confusion=confusion,
            scores=scores,
            labels=labels,
            video_ids=ids,
            num_views=views,
            average=average,
            unreadable_ids=bad_ids,
            unreadable_labels=bad_labels,
            skip_unreadable=skip_unreadable,
        )

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])

    @property
    def num_evaluated(self) -> int:
        """Videos that were read and scored."""
        return int(self.scores.shape[0])

    @property
    def unreadable(self) -> int:
        """Listed videos that could not be read."""
        return len(self.unreadable_ids)

    @property
    def class_videos(self) -> np.ndarray:
        """Videos of each class counted in its accuracy (the unreadable ones too, unless skipped)."""
        videos = self.confusion.sum(axis=1)
        if self.skip_unreadable:
            return videos
        known = self.unreadable_labels[self.unreadable_labels >= 0]
        return videos + np.bincount(known, minlength=self.num_classes)

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class of each video (argmax of its averaged scores)."""
        return self.scores.argmax(axis=1)

    def topk_correct(self, k: int) -> int:
        """Videos whose label is among their ``k`` best classes (an unreadable video never is)."""
        return int((_label_ranks(self.scores, self.labels) < min(k, self.num_classes)).sum())

    def unreadable_text(self) -> str:
        """``unreadable=K, counted as misses`` (or left out, with the flag that did it); empty for K=0."""
        if not self.unreadable:
            return ""
        how = "left out (--skip_unreadable)" if self.skip_unreadable else "counted as misses"
        return f"unreadable={self.unreadable}, {how}"

    def _views_text(self) -> str:
        lo, hi = int(self.num_views.min()), int(self.num_views.max())
        if hi == 1:
            return "1 view each"
        count = f"{lo} views each" if lo == hi else f"{lo} to {hi} views each"
        return f"{count}, {self.average}-averaged"

    def summary_line(self) -> str:
        """One human line: ``top1 71.23% top5 90.01% mean-class 70.50% over 1234 videos (…)``."""
        bad = self.unreadable_text()
        return (
            f"top1 {100 * self.top1:.2f}% top5 {100 * self.top5:.2f}% "
            f"mean-class {100 * self.mean_class_accuracy:.2f}% "
            f"over {self.num_videos} videos ({self._views_text()})" + (f"; {bad}" if bad else "")
        )

    def reference_line(self, ckpt: str | os.PathLike) -> str:
        """The MindSpore reference's ``print("result:", res, "ckpt=", path)`` line, for comparing logs."""
        return f"result: { ({'top_1_accuracy': float(self.top1)}) } ckpt= {os.fspath(ckpt)}"

    def to_json(self) -> dict[str, Any]:
        """The metrics as JSON-able values (no scores); classes without videos have accuracy ``None``."""
        return {
            "num_videos": self.num_videos,
            "evaluated_videos": self.num_evaluated,
            "unreadable_videos": self.unreadable,
            "skip_unreadable": self.skip_unreadable,
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
        """``class_index,class_name,videos,correct,accuracy,unreadable`` per class (accuracy empty
        without videos; ``videos`` includes the class's unreadable videos unless they were skipped)."""
        names = self._class_names(class_names)
        videos = self.class_videos
        correct = np.diag(self.confusion)
        known = self.unreadable_labels[self.unreadable_labels >= 0]
        unreadable = np.bincount(known, minlength=self.num_classes)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class_index", "class_name", "videos", "correct", "accuracy", "unreadable"])
        for i, name in enumerate(names):
            acc = "" if videos[i] == 0 else f"{correct[i] / videos[i]:.6f}"
            writer.writerow([i, name, int(videos[i]), int(correct[i]), acc, int(unreadable[i])])
        with atomic_path(path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")

    def save_npz(self, path: str | os.PathLike, class_names: Sequence[str] | None = None) -> None:
        """Averaged scores (each video's mean probabilities), labels, video ids, views, class names and
        the unreadable videos, loadable without pickle."""
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
                unreadable_ids=self.unreadable_ids,
                unreadable_labels=self.unreadable_labels,
                skip_unreadable=np.array(self.skip_unreadable),
            )


def load_npz(path: str | os.PathLike) -> tuple[EvalResult, list[str]]:
    """Read back what :meth:`EvalResult.save_npz` wrote: the result (recomputed) and the class names."""
    with np.load(Path(path), allow_pickle=False) as data:
        missing = {"scores", "labels", "video_ids", "num_views", "class_names"} - set(data.files)
        if missing:
            raise MetricsError(f"{path}: not an stnet score file (missing {', '.join(sorted(missing))})")
        average = str(data["average"]) if "average" in data.files else "softmax"
        result = EvalResult.from_scores(
            data["scores"],
            data["labels"],
            data["video_ids"],
            data["num_views"],
            average=average,
            unreadable_ids=data["unreadable_ids"] if "unreadable_ids" in data.files else (),
            unreadable_labels=data["unreadable_labels"] if "unreadable_labels" in data.files else None,
            skip_unreadable=bool(data["skip_unreadable"]) if "skip_unreadable" in data.files else False,
        )
        return result, [str(name) for name in data["class_names"]]


class ScoreAccumulator:
    """Averages each video's views as they arrive, in memory of one score row per *video*.

    Per video it keeps a running float32 sum of its views' softmax probabilities (``average="softmax"``,
    as TSN and Paddle's StNet test) or logits (``"logits"``), the number of views summed, the label and
    which view ids were added: ``videos × classes × 4`` bytes however many views each video has.
    ``add`` keeps the first score it is given for each ``(video id, view id)`` and ignores repeats; a
    score may stand for several identical views (``weights``: see
    :meth:`stnet.datasets.VideoClipDataset.distinct_views`). Videos that could not be read are recorded
    with :meth:`add_unreadable`.

    ``state()`` is plain numpy (and Python ints), one row per video, for
    ``torch.distributed.gather_object``; rebuild with ``from_state`` and ``merge`` them. Two parts of one
    video's views merge when they are disjoint (views split over processes) or one holds all the views of
    the other (the one holding more is kept, so no view is counted twice); a partial overlap cannot be
    taken apart from sums and is refused.
    """

    def __init__(self, num_classes: int | None = None, average: str = "softmax") -> None:
        if average not in AVERAGES:
            raise ValueError(f"average: {average!r} is not allowed; use one of {', '.join(AVERAGES)}")
        self.num_classes = num_classes
        self.average = average
        self._row: dict[int, int] = {}  # video id -> row
        self._ids = np.zeros(0, np.int64)
        self._labels = np.zeros(0, np.int64)
        self._weights = np.zeros(0, np.int64)
        self._sums = np.zeros((0, num_classes or 0), np.float32)
        self._views: list[int] = []  # per row, a bit mask of the view ids added
        self._unreadable: dict[int, int] = {}  # video id -> label (-1: unknown)

    @property
    def num_videos(self) -> int:
        return len(self._row)

    @property
    def num_unreadable(self) -> int:
        """Videos recorded as unreadable (and never scored)."""
        return sum(v not in self._row for v in self._unreadable)

    @property
    def num_scores(self) -> int:
        """Number of distinct (video, view) scores added."""
        return sum(mask.bit_count() for mask in self._views)

    def add(
        self,
        video_ids: Tensor | np.ndarray | Sequence[int],
        scores: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | Sequence[int],
        view_ids: Tensor | np.ndarray | Sequence[int] | int = 0,
        weights: Tensor | np.ndarray | Sequence[int] | int = 1,
    ) -> None:
        """Add one batch: ``scores`` (n, C) logits of views ``view_ids`` of videos ``video_ids``, each
        standing for ``weights`` identical views (default 1)."""
        logits = _to_numpy(scores).astype(np.float32)
        if logits.ndim != 2:
            raise MetricsError(f"scores must have shape (n, num_classes), got {logits.shape}")
        n, num_classes = logits.shape
        if self.num_classes not in (None, num_classes):
            raise MetricsError(f"scores have {num_classes} classes, earlier ones had {self.num_classes}")
        vids = _int_array(video_ids, "video_ids")
        views = self._per_row(view_ids, n, "view_ids")
        counts = self._per_row(weights, n, "weights")
        if vids.shape != (n,) or views.shape != (n,) or counts.shape != (n,):
            raise MetricsError(f"video_ids, view_ids and weights must have shape ({n},) to match the scores")
        if n and (views.min() < 0 or counts.min() < 1):
            raise MetricsError("view ids must be >= 0 and weights >= 1")
        labs = _int_array(labels, "labels")
        _check_labels(labs, n, num_classes)
        if not np.isfinite(logits).all():
            raise MetricsError("the scores contain NaN or inf (has training diverged?)")
        self._check_labels(vids.tolist(), labs.tolist())
        self._grow(num_classes)
        keep, rows = [], []
        for i, (v, k, y) in enumerate(zip(vids.tolist(), views.tolist(), labs.tolist(), strict=True)):
            row = self._row.get(v)
            if row is None:
                row = self._new_row(v, y)
            if not self._views[row] >> k & 1:
                self._views[row] |= 1 << k
                keep.append(i)
                rows.append(row)
        if keep:
            x = logits[keep]
            if self.average == "softmax":
                x = _softmax32(x)
            w = counts[keep]
            np.add.at(self._sums, rows, x * w[:, None].astype(np.float32))
            np.add.at(self._weights, rows, w)

    def add_unreadable(
        self, video_ids: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray | None = None
    ) -> None:
        """Record listed videos that could not be read, with their labels where known (-1 otherwise)."""
        vids = _int_array(video_ids, "video_ids").tolist()
        labs = [-1] * len(vids) if labels is None else _int_array(labels, "labels").tolist()
        for v, y in zip(vids, labs, strict=True):
            self._unreadable.setdefault(v, int(y))

    @staticmethod
    def _per_row(value: Any, n: int, name: str) -> np.ndarray:
        arr = _int_array(value, name)
        return np.full(n, arr[0], np.int64) if np.ndim(value) == 0 else arr

    def _check_labels(self, vids: list[int], labels: list[int]) -> None:
        """Refuse a video given two labels, before anything changes."""
        new: dict[int, int] = {}
        for v, y in zip(vids, labels, strict=True):
            row = self._row.get(v)
            known = int(self._labels[row]) if row is not None else new.get(v)
            if known is not None and known != y:
                raise MetricsError(f"video {v} was given label {y}, but earlier label {known}")
            new[v] = y

    def _grow(self, num_classes: int) -> None:
        """Set the class count; the first scores give the sums their columns."""
        self.num_classes = num_classes
        if self._sums.shape[1] != num_classes:  # first scores: the class count is known now
            self._sums = np.zeros((len(self._ids), num_classes), np.float32)

    def _new_row(self, video: int, label: int) -> int:
        row = len(self._row)
        if row == len(self._ids):  # double the capacity: amortised O(1) per video
            cap = max(64, 2 * row)
            self._ids = np.resize(self._ids, cap)
            self._labels = np.resize(self._labels, cap)
            self._weights = np.concatenate([self._weights, np.zeros(cap - row, np.int64)])
            sums = np.zeros((cap, self._sums.shape[1]), np.float32)
            sums[:row] = self._sums[:row]
            self._sums = sums
        self._row[video] = row
        self._ids[row], self._labels[row] = video, label
        self._views.append(0)
        return row

    def state(self) -> dict[str, Any]:
        """Plain numpy arrays (and Python ints), one row per video added."""
        n = self.num_videos
        return {
            "num_classes": self.num_classes,
            "average": self.average,
            "video_ids": self._ids[:n].copy(),
            "labels": self._labels[:n].copy(),
            "weights": self._weights[:n].copy(),
            "sums": self._sums[:n].copy(),
            "view_masks": list(self._views),
            "unreadable_ids": np.array(list(self._unreadable), np.int64),
            "unreadable_labels": np.array(list(self._unreadable.values()), np.int64),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ScoreAccumulator:
        """Rebuild an accumulator from :meth:`state` (e.g. another rank's)."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise MetricsError(f"not a ScoreAccumulator state: missing {', '.join(missing)}")
        acc = cls(state["num_classes"], state["average"])
        n = len(state["video_ids"])
        acc._ids = _int_array(state["video_ids"], "video_ids").copy()  # copies: merge adds in place
        acc._labels = _int_array(state["labels"], "labels").copy()
        acc._weights = _int_array(state["weights"], "weights").copy()
        acc._sums = np.array(state["sums"], np.float32).reshape(n, -1)
        acc._views = [int(mask) for mask in state["view_masks"]]
        if not (len(acc._ids) == len(acc._labels) == len(acc._weights) == len(acc._views) == n):
            raise MetricsError("not a ScoreAccumulator state: its arrays differ in length")
        acc._row = {int(v): i for i, v in enumerate(acc._ids.tolist())}
        acc.add_unreadable(state["unreadable_ids"], state["unreadable_labels"])
        return acc

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """Add ``other``'s videos to this one (shared videos: see the class docstring); returns ``self``."""
        if other.num_classes is not None and self.num_classes not in (None, other.num_classes):
            raise MetricsError(
                f"cannot merge {other.num_classes}-class scores into {self.num_classes}-class ones"
            )
        if other.average != self.average:
            raise MetricsError(
                f"cannot merge {other.average}-averaged scores into {self.average}-averaged ones"
            )
        n = other.num_videos
        ids, labels = other._ids[:n].tolist(), other._labels[:n].tolist()
        self._check_labels(ids, labels)
        for i, (v, y) in enumerate(zip(ids, labels, strict=True)):
            row = self._row.get(v)
            theirs = other._views[i]
            if row is not None:
                ours = self._views[row]
                if theirs & ~ours and ours & ~theirs and ours & theirs:
                    raise MetricsError(
                        f"video {v}: two parts of its views overlap without one holding the other; "
                        "per-video sums cannot count the shared views once"
                    )
                if not theirs & ~ours:  # nothing new (a duplicate)
                    continue
            if other.num_classes is not None:
                self._grow(other.num_classes)
            if row is None:
                row = self._new_row(v, y)
            elif not ours & ~theirs:  # theirs holds all of ours: take theirs instead
                self._sums[row] = 0
                self._weights[row] = 0
                self._views[row] = 0
            self._sums[row] += other._sums[i]
            self._weights[row] += other._weights[i]
            self._views[row] |= theirs
        if self.num_classes is None:
            self.num_classes = other.num_classes
        self.add_unreadable(list(other._unreadable), list(other._unreadable.values()))
        return self

    def result(self, *, skip_unreadable: bool = False) -> EvalResult:
        """Video-level results: each video's views averaged (as this accumulator's ``average`` says);
        the unreadable videos are misses unless ``skip_unreadable`` leaves them out."""
        n = self.num_videos
        if not n:
            raise MetricsError("no videos were evaluated")
        order = np.argsort(self._ids[:n], kind="stable")
        mean = self._sums[:n][order]
        weights = self._weights[:n][order]
        mean /= weights[:, None].astype(np.float32)
        bad = {v: y for v, y in self._unreadable.items() if v not in self._row}
        return EvalResult.from_scores(
            mean,
            self._labels[:n][order],
            self._ids[:n][order],
            weights,
            average=self.average,
            unreadable_ids=np.array(sorted(bad), np.int64),
            unreadable_labels=np.array([bad[v] for v in sorted(bad)], np.int64),
            skip_unreadable=skip_unreadable,
        )
