"""``stnet data check`` and ``stnet data stats``: look at data before spending GPU hours on it.

``check`` scans a source in any form ``stnet prepare`` reads (``ucf101``, ``kinetics``, ``hmdb51``,
``ssv2`` and ``list``, planned by prepare's own planners from prepare's own options), or a plain folder
of videos (``stnet data check SOURCE``, with or without ``--list`` files relative to it), without
converting anything: which files cannot be read and why, histograms of duration, frame rate, resolution
and codec, class counts, duplicate files (same size and SHA-256 of the first MiB), videos shorter than
one clip, and per split what planning found (missing videos, refused entries, HMDB51's unused ones).
The frame folders of a rawframe list are checked too: frame numbers the list promises that are not
there, the first frame decoded, the folders' resolutions. It writes ``check_report.json`` and
``check_summary.png`` into ``--out``. Items are probed in ``--workers`` processes; every result is
appended to ``check_results.jsonl`` as it comes, so an interrupted check resumes where it stopped (an
item is probed again when its size or mtime changed; a frame folder's mtime changes when a frame is
added or removed). By default a video is opened, its packets counted and its first frame decoded;
``--decode`` decodes every frame (exact frame counts, corruption anywhere).

``stats`` summarises a prepared store: frames per video, bytes, frame rates and class balance per split.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stnet import clipstore, formats
from stnet.argtypes import int_arg
from stnet.errors import DataError, UserError, os_error_line
from stnet.fileio import atomic_write_bytes, folder_lock, human_bytes, refuse_overwriting_inputs
from stnet.lists import read_classes
from stnet.prepare import (
    INPUT_FORMS,
    SPLITS,
    Plan,
    add_list_file_options,
    add_worker_options,
    index_videos,
    plan_list,
    worker_init,
)
from stnet.video import count_packets, iter_frames, open_video, read_frames

RESULTS = "check_results.jsonl"
REPORT = "check_report.json"
SUMMARY = "check_summary.png"
_RESULTS_HEADER = {"stnet": "data check results", "version": 1}
_HASHED = 1 << 20  # duplicates: same size and the same SHA-256 of the first MiB
DEFAULT_MIN_FRAMES = 35  # one clip of the default recipe (T=7 segments x N=5 frames)
_DURATION_BINS = (0, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)  # seconds
_LABEL_MAX = 16  # characters of a class name under its bar in the PNG
_MISSING_SHOWN = 20  # frame numbers listed per frame folder; missing_count counts them all
FOLDER = "folder"  # the form of `stnet data check SOURCE`: a plain folder of videos (maybe --list files)


@dataclass(frozen=True)
class Item:
    """One video file or frame folder to check: where it is, its class name ("" when the source does not
    say), its split, and for a frame folder the frame count its rawframe list gives (None: a video)."""

    path: str
    label: str = ""
    split: str = ""
    frames: int | None = None


@dataclass
class Source:
    """What a check looks at: the items of a folder and what planning found wrong with the rest."""

    folder: Path
    items: list[Item]
    inputs: list[str]  # files and folders read: --out must not be, or hold, one of them
    plan: dict[str, Any] = field(default_factory=dict)  # the form, and how the split was made
    missing: list[dict[str, str]] = field(default_factory=list)  # listed, not on disk
    refused: list[dict[str, str]] = field(default_factory=list)  # entries the planner refused
    notes: dict[str, Any] = field(default_factory=dict)  # the planner's (HMDB51's unused videos, ...)
    warnings: list[str] = field(default_factory=list)
    template: str = formats.FRAME_TEMPLATE  # the frame files of its frame folders


# ----------------------------------------------------------------------------------------------------
# Finding the items (prepare's planners) and probing one (in worker processes)
# ----------------------------------------------------------------------------------------------------


def from_plan(plan: Plan, folder: Path, template: str = formats.FRAME_TEMPLATE) -> Source:
    """The source a prepare plan describes: its jobs are the items, its findings are kept."""
    items = [Item(j.source, plan.classes[j.label], j.split, j.frames) for j in plan.jobs]
    return Source(
        folder,
        items,
        list(plan.inputs),
        {"form": plan.command, **plan.split},
        plan.missing,
        plan.failures,
        plan.notes,
        plan.warnings,
        template,
    )


def scan_folder(source: Path) -> Source:
    """Every video file under ``source``, labelled by its class folder when the tree is
    ``[split/]class/video`` (prepare list's ``--folders``)."""
    labelled: dict[str, Item] = {}
    with contextlib.suppress(DataError):  # no class folders: the videos have no label
        plan = plan_list([], source, True, None)
        labelled = {j.source: Item(j.source, plan.classes[j.label], j.split) for j in plan.jobs}
    items = [labelled.get(str(source / rel), Item(str(source / rel))) for rel in index_videos(source)]
    return Source(source, items, [str(source)], {"form": FOLDER})


def source_of(args: argparse.Namespace) -> Source:
    """The source the ``data check`` command line names: a prepare form, or a folder (with --list files)."""
    template = formats.check_frame_template(getattr(args, "filename_tmpl", formats.FRAME_TEMPLATE))
    if args.form != FOLDER:
        form = INPUT_FORMS[args.form]
        return from_plan(form.plan(args), Path(getattr(args, form.folder)), template)
    folder = Path(args.source)
    if not folder.is_dir():
        raise DataError(f"source folder not found: {folder}")
    if not args.list:
        return scan_folder(folder)
    plan = plan_list(args.list, folder, False, args.label_file, args.format, template)
    return from_plan(plan, folder, template)


def head_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the first MiB of ``path``."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(_HASHED)).hexdigest()


def _safely(fill: Callable[..., None], *args: Any) -> dict[str, Any]:
    """The result ``fill(result, *args)`` fills in; what it raises becomes ``result["error"]`` (a line)."""
    result: dict[str, Any] = {}
    try:
        fill(result, *args)
    except DataError as e:
        result["error"] = str(e)
    except OSError as e:
        result["error"] = os_error_line(e)
    except Exception as e:  # a bad file must never stop the check
        result["error"] = f"unexpected error: {type(e).__name__}: {e}"
    return result


def probe(path: str, decode: bool = False) -> dict[str, Any]:
    """What the video ``path`` holds: ``size``, ``head`` (digest) and either ``error`` (why it cannot be
    read) or ``codec``, ``width``, ``height``, ``fps``, ``frames``, ``seconds``. Never raises.

    ``frames`` is the number of video packets (or, with ``decode``, of decoded frames); the first frame
    is always decoded, so a stream without a decodable frame is an error.
    """
    return _safely(_probe_video, path, decode)


def _probe_video(result: dict[str, Any], path: str, decode: bool) -> None:
    result["decoded"] = decode
    result["size"] = os.path.getsize(path)
    result["head"] = head_digest(path)
    with open_video(path) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        result.update(
            codec=context.name,
            width=context.width,
            height=context.height,
            fps=round(float(stream.average_rate), 3) if stream.average_rate else 0.0,
        )
        header_seconds = float(stream.duration * stream.time_base) if stream.duration else None
        announced = int(stream.frames or 0)
    if decode:
        count = 0

        def counted(index: int) -> bool:
            nonlocal count
            count = index + 1
            return False  # decoded, never converted

        for _ in iter_frames(path, counted):
            pass
        result["frames"] = count
    else:
        read_frames(path, [0])
        result["frames"] = count_packets(path)
    fps = result["fps"]
    result["seconds"] = round(result["frames"] / fps, 3) if fps else header_seconds
    if announced > result["frames"]:
        what = "decoded frames" if decode else "packets"
        result["warning"] = f"{result['frames']} {what}, the header announces {announced} (truncated?)"


def probe_frames(folder: str, template: str, listed: int, decode: bool = False) -> dict[str, Any]:
    """What the frame folder ``folder`` of a rawframe entry listing ``listed`` frames holds: ``size``
    (bytes of its numbered frame files), ``head`` (digest of its first frame), ``frames`` (the frames
    from the first up to the first number not there, at most ``listed``: what prepare reads when no
    listed frame is missing), ``missing`` (listed frame numbers not there, the first few;
    ``missing_count``: all; prepare fails such a folder), ``codec`` (the first frame's image format),
    ``width``, ``height``; or ``error``. Never raises. The first frame is decoded; with ``decode``,
    every one of ``frames``."""
    return _safely(_probe_folder, folder, template, listed, decode)


def _probe_folder(result: dict[str, Any], folder: str, template: str, listed: int, decode: bool) -> None:
    result.update(decoded=decode, listed=listed, template=template)
    names = set(os.listdir(folder))
    run = 0
    while formats.frame_name(template, run) in names:
        run += 1
    numbered = [formats.frame_name(template, i) for i in range(max(listed, run))]
    missing = [formats.FIRST_FRAME + i for i, name in enumerate(numbered[:listed]) if name not in names]
    result["size"] = sum(os.path.getsize(os.path.join(folder, n)) for n in numbered if n in names)
    frames = min(run, listed)
    result.update(frames=frames, missing=missing[:_MISSING_SHOWN], missing_count=len(missing))
    if not run:
        raise DataError(f"no frame {formats.frame_name(template, 0)} in the folder (see --filename-tmpl)")
    first = os.path.join(folder, formats.frame_name(template, 0))
    result["head"] = head_digest(first)
    image, kind = formats.read_frame(first)
    result.update(codec=kind.lower(), width=image.width, height=image.height, fps=None, seconds=None)
    if decode:
        for _ in formats.iter_frame_folder(folder, template, frames):
            pass
    if run > listed:
        result["warning"] = (
            f"{run} frames from {formats.frame_name(template, 0)} on, the list says {listed} "
            f"(prepare reads {listed})"
        )


def probe_item(item: Item, template: str, decode: bool) -> dict[str, Any]:
    """:func:`probe` a video, :func:`probe_frames` a frame folder."""
    if item.frames is None:
        return probe(item.path, decode)
    return probe_frames(item.path, template, item.frames, decode)


# ----------------------------------------------------------------------------------------------------
# Resumable results
# ----------------------------------------------------------------------------------------------------


def _key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, st.st_size, st.st_mtime_ns


def _load_results(file: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The results an earlier (maybe interrupted) run appended to ``file``, by (path, size, mtime_ns)."""
    if not file.exists():
        return {}
    known: dict[tuple[str, int, int], dict[str, Any]] = {}
    with open(file, encoding="utf-8", errors="surrogateescape") as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if header != _RESULTS_HEADER:
            raise UserError(
                f"{file} exists and is not stnet data check's results file; nothing was written: move it "
                "away or choose another --out folder"
            )
        for line in f:
            try:
                entry = json.loads(line)
                known[(entry["path"], entry["stat_size"], entry["mtime_ns"])] = entry["result"]
            except (ValueError, KeyError, TypeError):
                continue  # the half-written last line of a killed run
    return known


def _ends_mid_line(file: Path) -> bool:
    with open(file, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


Key = tuple[str, int, int]  # path, size, mtime_ns: a result is reused only for the same three


def _reusable(earlier: dict[str, Any] | None, item: Item, template: str, decode: bool) -> bool:
    """Whether an earlier result still answers for ``item``: as deep a probe, and for a frame folder the
    same listed frame count and frame names."""
    if earlier is None or (decode and not earlier.get("decoded")):
        return False
    if item.frames is None:
        return "listed" not in earlier
    return earlier.get("listed") == item.frames and earlier.get("template") == template


def _probe_all(
    todo: list[tuple[Key, Item]],
    template: str,
    decode: bool,
    workers: int,
    progress: bool,
    results_file: Path,
) -> dict[str, dict[str, Any]]:
    """Probe each item of ``todo``; append each result to ``results_file`` as it comes. By path."""
    from tqdm import tqdm

    new = not results_file.exists()
    torn = not new and _ends_mid_line(results_file)  # a killed run's half-written last line
    found: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(todo), unit="item", desc="check", disable=not progress, dynamic_ncols=True)
    try:
        with open(results_file, "a", encoding="utf-8", errors="surrogateescape") as f:
            if new:
                f.write(json.dumps(_RESULTS_HEADER) + "\n")
            elif torn:
                f.write("\n")  # the torn line stays unreadable; the next result starts a line of its own

            def record(key: Key, result: dict[str, Any]) -> None:
                found[key[0]] = result
                line = {"path": key[0], "stat_size": key[1], "mtime_ns": key[2], "result": result}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                bar.update()

            if workers <= 1:
                for key, item in todo:
                    record(key, probe_item(item, template, decode))
                return found
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with cf.ProcessPoolExecutor(
                workers, mp_context=context, initializer=worker_init, initargs=(os.getpid(),)
            ) as pool:
                futures = {pool.submit(probe_item, item, template, decode): key for key, item in todo}
                try:
                    for future in cf.as_completed(futures):
                        record(futures[future], future.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return found


# ----------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------


def _duration_bin(seconds: float) -> str:
    for low, high in itertools.pairwise(_DURATION_BINS):
        if seconds < high:
            return f"{low}-{high} s"
    return f">= {_DURATION_BINS[-1]} s"


def _ordered(counter: Counter) -> dict[str, int]:
    return dict(counter.most_common())


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS)), split


def _per_split(
    source: Source, results: dict[str, dict[str, Any]], min_frames: int
) -> dict[str, dict[str, Any]]:
    """Each split's probe results and planner findings (a video listed in two splits counts in both)."""
    named = {i.split for i in source.items} | {e["split"] for e in (*source.missing, *source.refused)}
    splits: dict[str, dict[str, Any]] = {}
    for split in sorted(named - {""}, key=_split_order):
        items = [i for i in source.items if i.split == split]
        ok = [results[i.path] for i in items if "error" not in results[i.path]]
        splits[split] = {
            "videos": len(items),
            "readable": len(ok),
            "unreadable": len(items) - len(ok),
            "too_short": sum(r["frames"] < min_frames for r in ok),
            "missing": sum(m["split"] == split for m in source.missing),
            "refused": sum(r["split"] == split for r in source.refused),
            "classes": _ordered(Counter(i.label for i in items if i.label)),
        }
    return splits


def _duplicates(paths: Iterable[str], results: dict[str, dict[str, Any]]) -> list[list[str]]:
    groups: dict[tuple[int, str], list[str]] = {}
    for path in paths:
        result = results[path]
        if result.get("size") and "head" in result:  # empty files are unreadable, not duplicates
            groups.setdefault((result["size"], result["head"]), []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def _files(items: Iterable[Item]) -> dict[str, Item]:
    """The first item of each path, in order: a video listed twice is one file."""
    first: dict[str, Item] = {}
    for item in items:
        first.setdefault(item.path, item)
    return first


def build_report(source: Source, results: dict[str, dict[str, Any]], min_frames: int) -> dict[str, Any]:
    """The check's findings from each item's probe result (by path) and the source's planner findings.

    Counts are of entries (a video in two splits counts twice); the lists name each file once."""
    files = _files(source.items)
    unreadable, too_short, missing_frames = [], [], []
    for path, item in files.items():
        result = results[path]
        if "error" in result:
            unreadable.append({"path": path, "reason": result["error"]})
            continue
        if result["frames"] < min_frames:
            too_short.append({"path": path, "frames": result["frames"], "seconds": result["seconds"]})
        if result.get("missing_count"):
            missing_frames.append(
                {
                    "path": path,
                    "listed": item.frames,
                    "frames": result["frames"],  # the ones before the first gap
                    "missing": result["missing"],
                    "missing_count": result["missing_count"],
                }
            )
    readable = [(item, results[item.path]) for item in source.items if "error" not in results[item.path]]
    ok = [results[p] for p in files if "error" not in results[p]]
    bins = [_duration_bin(r["seconds"]) for r in ok if r.get("seconds") is not None]
    order = {b: i for i, b in enumerate(_duration_bin(x) for x in (*_DURATION_BINS[:-1], 1e9))}
    return {
        "source": str(source.folder),
        "plan": source.plan,
        "videos": len(source.items),
        "frame_folders": sum(item.frames is not None for item in source.items),
        "readable": len(readable),
        "bytes": sum(results[p].get("size", 0) for p in files),
        "unreadable": unreadable,
        "too_short": too_short,
        "suspect": [{"path": p, "warning": results[p]["warning"]} for p in files if "warning" in results[p]],
        "missing_frames": missing_frames,
        "min_frames": min_frames,
        "duplicates": _duplicates(files, results),
        "missing": source.missing,
        "refused": source.refused,
        "warnings": source.warnings,
        **source.notes,
        "classes": _ordered(Counter(i.label for i in source.items if i.label)),
        "splits": _per_split(source, results, min_frames),
        "histograms": {
            "seconds": dict(sorted(Counter(bins).items(), key=lambda kv: order[kv[0]])),
            "fps": _ordered(Counter(f"{r['fps']:g}" for r in ok if r.get("fps") is not None)),
            "resolution": _ordered(Counter(f"{r['width']}x{r['height']}" for r in ok)),
            "codec": _ordered(Counter(r["codec"] for r in ok)),
        },
    }


def _bars(ax: Any, title: str, counts: dict[str, int]) -> None:
    names, values = list(counts), list(counts.values())
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_title(title)
    _ticks(ax, names)
    if not values:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)


def _ticks(ax: Any, names: list[str]) -> None:
    if len(names) > 30:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(names)} classes, most videos first")
        return
    shown = [n if len(n) <= _LABEL_MAX else n[: _LABEL_MAX - 1] + "…" for n in names]
    crowded = len(names) > 4 or sum(map(len, shown)) > 30
    ax.set_xticks(
        range(len(names)),
        shown,
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
        fontsize="small" if crowded else None,
    )


def _class_balance(ax: Any, report: dict[str, Any]) -> None:
    """Videos per class (most first), stacked by split when the source has splits."""
    names = list(report["classes"])
    splits = {s: c["classes"] for s, c in report["splits"].items() if c["classes"]}
    if not splits or not names:
        _bars(ax, "videos per class", report["classes"])
        return
    bottom = [0] * len(names)
    for split, counts in splits.items():
        values = [counts.get(name, 0) for name in names]
        ax.bar(range(len(names)), values, bottom=bottom, label=split)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("videos per class")
    ax.legend(fontsize="small")
    _ticks(ax, names)


def plot_summary(report: dict[str, Any], path: Path) -> Path:
    """The report's histograms and class balance as one PNG (matplotlib's Agg canvas)."""
    from stnet.plots import new_figure, save_png

    fig = new_figure(14, 8, layout=None)  # fixed margins: tick labels are cut to _LABEL_MAX characters
    axes = fig.subplots(2, 3, gridspec_kw={"left": 0.04, "right": 0.99, "top": 0.9, "bottom": 0.18})
    fig.subplots_adjust(hspace=0.5, wspace=0.15)
    panels = [
        ("duration", report["histograms"]["seconds"]),
        ("frame rate (fps)", report["histograms"]["fps"]),
        ("resolution", report["histograms"]["resolution"]),
        ("codec", report["histograms"]["codec"]),
    ]
    for ax, (title, counts) in zip(axes.flat, panels, strict=False):
        _bars(ax, title, counts)
    _class_balance(axes.flat[4], report)
    files = {
        "readable": report["readable"],
        "unreadable": len(report["unreadable"]),
        "too short": len(report["too_short"]),
        "duplicates": sum(len(g) - 1 for g in report["duplicates"]),
        "missing": len(report["missing"]),
        "refused": len(report["refused"]),
    }
    if report["frame_folders"]:
        files["frames missing"] = len(report["missing_frames"])
    _bars(axes.flat[5], "entries", files)
    fig.suptitle(f"{report['source']}: {report['videos']} videos, {human_bytes(report['bytes'])}")
    return save_png(fig, path)


def _refuse_foreign_outputs(out: Path) -> None:
    """A report or PNG in ``out`` without the results file of ours is someone else's: refuse."""
    if (out / RESULTS).exists():
        return
    for name in (REPORT, SUMMARY):
        if (out / name).exists():
            raise UserError(
                f"{out / name} exists and stnet data check did not write it; nothing was written: "
                "move it away or choose another --out folder"
            )


def check(
    source: Source,
    out: Path,
    *,
    workers: int = 1,
    decode: bool = False,
    min_frames: int = DEFAULT_MIN_FRAMES,
    progress: bool = True,
) -> dict[str, Any]:
    """Check the items of ``source`` (see the module doc); write the report and the PNG into ``out``."""
    refuse_overwriting_inputs([out], source.inputs)
    if not source.items and not (source.missing or source.refused):
        raise DataError(f"no video files found in {source.folder}")
    for warning in source.warnings:
        print(f"stnet: warning: {warning}", file=sys.stderr)
    results_file = out / RESULTS
    with folder_lock(out, "data check"):
        _refuse_foreign_outputs(out)
        known = _load_results(results_file)
        results: dict[str, dict[str, Any]] = {}
        todo: list[tuple[Key, Item]] = []
        reused = 0
        for path, item in _files(source.items).items():
            key = _key(path)
            if key is None:  # gone or unreadable: the probe says why
                results[path] = probe_item(item, source.template, decode)
            elif _reusable(known.get(key), item, source.template, decode):
                results[path] = known[key]
                reused += 1
            else:
                todo.append((key, item))
        results.update(_probe_all(todo, source.template, decode, workers, progress, results_file))
        report = build_report(source, results, min_frames)
        report.update({"probed": len(todo), "reused": reused, "decoded_every_frame": decode})
        atomic_write_bytes(out / REPORT, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
        plot_summary(report, out / SUMMARY)
    return report


# ----------------------------------------------------------------------------------------------------
# stats of a prepared store
# ----------------------------------------------------------------------------------------------------


def _spread(values: Iterable[float]) -> dict[str, float]:
    values = list(values)
    if not values:
        return {}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 2),
        "max": max(values),
    }


def store_stats(root: Path) -> dict[str, Any]:
    """Frames per video, bytes, frame rates and class balance of the store prepare wrote at ``root``."""
    from stnet.datasets import read_list

    if not root.is_dir():
        raise DataError(f"store folder not found: {root}")
    lists = [s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file()]
    if not lists:
        raise DataError(f"{root} holds no train.txt/val.txt/test.txt: is it a folder from `stnet prepare`?")
    classes = read_classes(root / "classes.txt") if (root / "classes.txt").is_file() else None
    infos: dict[Path, clipstore.ClipInfo] = {}
    unreadable: dict[Path, str] = {}
    balance: dict[str, dict[str, int]] = {}
    for split in lists:
        samples = read_list(root / f"{split}.txt", root)
        names = Counter(
            classes[s.label] if classes and s.label < len(classes) else str(s.label) for s in samples
        )
        balance[split] = _ordered(names)
        for sample in samples:
            if sample.path in infos or sample.path in unreadable:
                continue
            try:
                if not clipstore.is_complete(sample.path):
                    raise DataError("missing or incomplete clip file")
                infos[sample.path] = clipstore.read_info(sample.path)
            except (DataError, OSError) as e:
                unreadable[sample.path] = str(e)
    store = sum(info.size for info in infos.values())
    return {
        "store": str(root),
        "videos": len(infos),
        "frames_per_video": _spread(i.num_frames for i in infos.values()),
        "frames": sum(i.num_frames for i in infos.values()),
        "bytes": {"store": store, "per_video": round(store / len(infos)) if infos else 0},
        "fps": _ordered(Counter(f"{i.fps:g}" for i in infos.values())),
        "resampled": sum(i.timeline.resampled for i in infos.values()),
        "classes": balance,
        "unreadable": [{"path": str(path), "reason": reason} for path, reason in unreadable.items()],
    }


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def _no_rest(rest: Sequence[str]) -> None:
    if rest:
        raise DataError(f"unexpected arguments: {' '.join(rest)}")


def cmd_check(args: argparse.Namespace, rest: Sequence[str]) -> int:
    _no_rest(rest)
    out = Path(args.out)
    report = check(
        source_of(args),
        out,
        workers=args.workers,
        decode=args.decode,
        min_frames=args.min_frames,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    for line in summary_lines(report):
        print(line)
    print(f"  report: {out / REPORT}, summary: {out / SUMMARY}")
    return 0


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report in a few lines: counts, the first problems of each kind, histograms, splits."""
    folders = f"{report['frame_folders']} frame folders, " if report["frame_folders"] else ""
    lines = [
        f"{report['source']}: {report['videos']} videos ({folders}{human_bytes(report['bytes'])}), "
        f"{report['readable']} readable, {len(report['unreadable'])} unreadable, "
        f"{len(report['duplicates'])} group(s) of duplicates, {len(report['too_short'])} shorter than "
        f"{report['min_frames']} frames, {len(report['missing'])} listed but missing, "
        f"{len(report['refused'])} refused"
    ]
    lines += [f"  unreadable: {e['path']}: {e['reason']}" for e in report["unreadable"][:10]]
    lines += [f"  suspect: {e['path']}: {e['warning']}" for e in report["suspect"][:10]]
    for e in report["missing_frames"][:10]:
        more = ", ..." if e["missing_count"] > len(e["missing"]) else ""
        shown = ", ".join(map(str, e["missing"])) + more
        lines.append(
            f"  missing frames: {e['path']}: {e['missing_count']} of {e['listed']} listed ({shown}); "
            "prepare fails this folder (it reads every listed frame)"
        )
    lines += [f"  duplicates: {', '.join(group)}" for group in report["duplicates"][:10]]
    lines += [f"  missing: {e['split']}: {e['entry']}" for e in report["missing"][:10]]
    lines += [f"  refused: {e['split']}: {e['source']}: {e['reason']}" for e in report["refused"][:10]]
    for name, counts in report["histograms"].items():
        shown = ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:8])
        lines.append(f"  {name}: {shown or 'none'}")
    if report["classes"]:
        counts = list(report["classes"].values())
        lines.append(f"  classes: {len(counts)}, {min(counts)}-{max(counts)} videos each")
    for split, c in report["splits"].items():
        lines.append(
            f"  {split}: {c['videos']} videos in {len(c['classes'])} classes, {c['readable']} readable, "
            f"{c['unreadable']} unreadable, {c['too_short']} too short, {c['missing']} missing, "
            f"{c['refused']} refused"
        )
    if report.get("unused"):
        lines.append(f"  unused by this split: {report['unused']} videos")
    return lines


def cmd_stats(args: argparse.Namespace, rest: Sequence[str]) -> int:
    _no_rest(rest)
    stats = store_stats(Path(args.store))
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return 0
    f, b = stats["frames_per_video"], stats["bytes"]
    print(f"{stats['store']}: {stats['videos']} videos, {stats['frames']} frames, {human_bytes(b['store'])}")
    if f:
        print(f"  frames per video: min {f['min']}, median {f['median']}, mean {f['mean']}, max {f['max']}")
    print(f"  bytes per video: {human_bytes(b['per_video'])}")
    print("  stored fps: " + ", ".join(f"{k} ({v})" for k, v in stats["fps"].items()))
    for split, counts in stats["classes"].items():
        values = list(counts.values())
        if not values:
            print(f"  {split}: empty")
            continue
        print(f"  {split}: {sum(values)} videos in {len(values)} classes, {min(values)}-{max(values)} each")
    for entry in stats["unreadable"][:10]:
        print(f"  unreadable: {entry['path']}: {entry['reason']}")
    return 0


class _FormOrSource(argparse._SubParsersAction):
    """``data check``'s first word: a prepare form (``ucf101``, ...), or else the SOURCE folder of the
    plain form, whose parser is registered under :data:`_FOLDER_KEY`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = None  # type: ignore[assignment]  # any word: __call__ chooses the parser

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        if values[0] not in self._name_parser_map:
            values = [_FOLDER_KEY, *values]
        super().__call__(parser, namespace, values, option)


_FOLDER_KEY = "-folder"  # no command-line word reaches a positional as this: words starting "-" are options


def _check_options(p: argparse.ArgumentParser) -> None:
    """The options of every form of ``data check``."""
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the report, PNG and results")
    add_worker_options(p, "probing")
    p.add_argument("--decode", action="store_true", help="decode every frame (slower; exact frame counts)")
    p.add_argument(
        "--min-frames",
        "--min_frames",
        dest="min_frames",
        type=int_arg(1),
        default=DEFAULT_MIN_FRAMES,
        metavar="K",
        help=f"report videos with fewer frames: one clip, T x N (default {DEFAULT_MIN_FRAMES} = 7 x 5)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=cmd_check)


_CHECKS = (
    "Scanned without converting: unreadable files with their reasons, duration/fps/resolution/codec "
    "histograms, class counts, duplicates (same size and hash of the first MiB), videos shorter than "
    "one clip, per split what planning found (missing, refused). Writes OUT/check_report.json and "
    "OUT/check_summary.png; a rerun resumes from OUT/check_results.jsonl, probing only new or changed "
    "files."
)


def register_cli(subparsers: Any) -> None:
    """Add ``data`` (with ``check`` and ``stats``) to an argparse sub-parser collection."""
    p = subparsers.add_parser("data", help="check a video source before preparing it; stats of a store")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser(
        "check",
        help="scan a source without converting: unreadable files, histograms, classes, duplicates",
        description="Scan a source in any form `stnet prepare` reads, with prepare's options for it "
        "(`stnet data check ucf101 --source DIR --out OUT`, kinetics, hmdb51, ssv2, list), or a folder "
        "of videos (`stnet data check SOURCE --out OUT [--list FILE]`: class folders, or --list files "
        "relative to SOURCE; a folder named like a form is written ./NAME). " + _CHECKS,
    )
    forms = c.add_subparsers(dest="form", metavar="FORM|SOURCE", required=True, action=_FormOrSource)
    plain = forms.add_parser(
        _FOLDER_KEY,
        prog=c.prog,
        description="Scan the videos under SOURCE (labelled by their class folders, [split/]class/video) "
        "or the entries of --list files relative to SOURCE (video, csv or rawframe lists, as prepare "
        "list reads them). " + _CHECKS,
    )
    plain.add_argument("source", metavar="SOURCE", help="the video folder")
    add_list_file_options(plain)
    _check_options(plain)
    plain.set_defaults(form=FOLDER)
    for form in INPUT_FORMS.values():
        f = forms.add_parser(form.name, help=form.help, description=f"{form.description} {_CHECKS}")
        form.add_options(f)
        _check_options(f)
    s = sub.add_parser(
        "stats",
        help="a prepared store: frames per video, bytes, fps, class balance",
        description="Summarise a folder written by `stnet prepare`: frames per video, bytes, stored frame "
        "rates and class balance of each split; incomplete clip files are listed.",
    )
    s.add_argument("store", metavar="STORE", help="a folder from `stnet prepare`")
    s.add_argument("--json", action="store_true", help="print the stats as JSON on stdout")
    s.set_defaults(func=cmd_stats)


__all__ = [
    "Item",
    "Source",
    "build_report",
    "check",
    "from_plan",
    "plot_summary",
    "probe",
    "probe_frames",
    "probe_item",
    "register_cli",
    "scan_folder",
    "source_of",
    "store_stats",
    "summary_lines",
]
