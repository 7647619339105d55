"""Figures of a run: the confusion matrix of an evaluation, and training curves from ``metrics.jsonl``.

matplotlib is imported inside the functions (``import stnet`` stays fast) and only through its Agg
canvas, never pyplot: no display is needed and no global figure state is touched, so plotting from a
training loop or a thread is safe. Every PNG is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stnet.fileio import atomic_path

_CELL_NUMBERS_MAX = 20  # above this many classes, cells are too small for their numbers
_DPI = 100


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot state).

    ``layout`` is matplotlib's layout engine; None places the axes where the caller says (faster:
    constrained layout draws the figure twice)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


def plot_confusion(
    confusion: np.ndarray,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    normalize: bool = True,
) -> Path:
    """Write the confusion matrix (rows: true class, columns: predicted) as a PNG; returns ``path``.

    ``normalize`` divides each row by its number of videos (per-class recall on the diagonal). The
    figure grows with the number of classes and the font shrinks, so ~100 class names stay legible;
    cells carry their numbers up to 20 classes.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {counts.shape}")
    num_classes = counts.shape[0]
    names = [str(i) for i in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for a {num_classes}-class confusion matrix")
    total = counts.sum()
    top1 = np.trace(counts) / total if total else math.nan
    values = counts
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)

    side = min(5.0 + 0.18 * num_classes, 30.0)
    fig = new_figure(side + 1.5, side)
    ax = fig.add_subplot()
    image = ax.imshow(
        values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class" if normalize else "videos")
    points_per_class = 72 * side * 0.8 / num_classes
    fontsize = float(np.clip(0.7 * points_per_class, 3.0, 10.0))
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if num_classes <= _CELL_NUMBERS_MAX:
        _annotate_cells(ax, values, normalize)
    kind = "row-normalised" if normalize else "counts"
    fig.suptitle(f"confusion matrix ({kind}): top-1 {100 * top1:.2f}% over {int(total)} videos")
    return save_png(fig, path)


def _annotate_cells(ax: Any, values: np.ndarray, normalize: bool) -> None:
    threshold = 0.5 * (values.max() or 1.0)
    for (i, j), v in np.ndenumerate(values):
        text = f"{v:.2f}" if normalize else f"{int(v)}"
        colour = "white" if v > threshold else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key``: finite numbers only, the last record of an epoch wins (a resumed run)."""
    by_epoch: dict[float, float] = {}
    for record in records:
        epoch, value = record.get("epoch"), record.get(key)
        if _is_number(epoch) and _is_number(value) and math.isfinite(value):
            by_epoch[float(epoch)] = float(value)
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write training curves as a PNG (e.g. ``curves.png``) from ``metrics.jsonl`` records; returns ``path``.

    Left: ``train_loss`` and ``lr`` (log scale, right axis) by epoch. Right: ``val_top1``/``val_top5``
    by epoch, in percent (fractions are scaled). Records lacking a key (epochs without evaluation) are
    simply absent from that curve.
    """
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(12.0, 4.5)
    loss_ax, val_ax = fig.subplots(1, 2)
    _plot_training(loss_ax, records)
    _plot_validation(val_ax, records)
    for ax in (loss_ax, val_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    return save_png(fig, path)


def _plot_training(ax: Any, records: Sequence[Mapping[str, Any]]) -> None:
    epochs, loss = _series(records, "train_loss")
    lr_epochs, lr = _series(records, "lr")
    ax.set_title("training")
    if not epochs and not lr_epochs:
        _no_data(ax, "no training records yet")
        return
    handles = []
    if epochs:
        handles += ax.plot(epochs, loss, "o-", color="tab:blue", markersize=3, label="train loss")
    ax.set_ylabel("loss")
    if lr_epochs:
        lr_ax = ax.twinx()
        handles += lr_ax.plot(lr_epochs, lr, "--", color="tab:orange", label="learning rate")
        if min(lr) > 0:
            lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
    ax.legend(handles=handles, loc="upper right")


def _plot_validation(ax: Any, records: Sequence[Mapping[str, Any]]) -> None:
    ax.set_title("validation")
    ax.set_ylabel("accuracy (%)")
    plotted = False
    for key, label, colour in (("val_top1", "top-1", "tab:green"), ("val_top5", "top-5", "tab:purple")):
        epochs, values = _series(records, key)
        if not epochs:
            continue
        if max(values) <= 1.0:  # fractions, as EvalResult reports them
            values = [100 * v for v in values]
        ax.plot(epochs, values, "o-", color=colour, markersize=4, label=label)
        if key == "val_top1":
            best = int(np.argmax(values))
            ax.set_title(f"validation (best top-1 {values[best]:.2f}% at epoch {epochs[best]:g})")
        plotted = True
    if plotted:
        ax.legend(loc="lower right")
    else:
        _no_data(ax, "no evaluation yet")


def plot_timeline(
    times: Sequence[float],
    probs: np.ndarray,
    class_names: Sequence[str],
    segments: Sequence[tuple[int, float, float]],
    duration: float,
    path: str | os.PathLike,
    *,
    threshold: float | None = None,
    top: int = 5,
    title: str = "",
) -> Path:
    """Write a timeline PNG: the probability over time (window centres ``times``, ``probs`` (windows,
    classes)) of the ``top`` classes that reach the highest probability anywhere, above a strip of the
    ``segments`` ((class index, start, end) in seconds) in the same colours; time axis in mm:ss."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    probs = np.asarray(probs, dtype=np.float64).reshape(len(times), -1)
    shown = [int(c) for c in np.argsort(-probs.max(axis=0), kind="stable")[:top]] if len(times) else []
    for c, _start, _end in segments:
        if c not in shown:
            shown.append(c)
    colours = {c: f"C{i % 10}" for i, c in enumerate(shown)}
    fig = new_figure(10.0, 4.0)
    curve_ax, strip_ax = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1])
    for c in shown:
        curve_ax.plot(times, probs[:, c], "o-", markersize=3, color=colours[c], label=class_names[c])
    if threshold is not None:
        curve_ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="threshold")
    curve_ax.set_ylim(0, 1.02)
    curve_ax.set_ylabel("probability")
    curve_ax.grid(True, alpha=0.3)
    if shown:
        curve_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for c, start, end in segments:
        strip_ax.broken_barh([(start, end - start)], (0, 1), color=colours[c])
        strip_ax.text(
            (start + end) / 2, 0.5, class_names[c], ha="center", va="center", fontsize=7, clip_on=True
        )
    strip_ax.set_yticks([])
    strip_ax.set_ylabel("segments", rotation=0, ha="right", va="center")
    strip_ax.set_xlim(0, max(duration, 1e-3))
    strip_ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 3, 5, 6, 10]))
    strip_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(x // 60):02d}:{x % 60:04.1f}"))
    strip_ax.set_xlabel("time (mm:ss)")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
