"""``stnet data check`` and ``stnet data stats``: look at data before spending GPU hours on it.

``check`` scans a source the way ``stnet prepare list`` finds it (a folder of class folders, or
``--list`` files relative to the folder; UCF101, HMDB51, Kinetics and SSv2 downloads are such folders)
without converting anything: which files cannot be read and why, histograms of duration, frame rate,
resolution and codec, class counts, duplicate files (same size and SHA-256 of the first MiB) and videos
shorter than one clip. It writes ``check_report.json`` and ``check_summary.png`` into ``--out``. Files
are probed in ``--workers`` processes; every result is appended to ``check_results.jsonl`` as it comes,
so an interrupted check resumes where it stopped (a file is probed again when its size or mtime changed).
By default a file is opened, its packets counted and its first frame decoded; ``--decode`` decodes every
frame (exact frame counts, corruption anywhere).

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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stnet import clipstore
from stnet.argtypes import int_arg, workers_arg
from stnet.errors import DataError, UserError, os_error_line
from stnet.fileio import atomic_write_bytes, folder_lock, human_bytes, refuse_overwriting_inputs
from stnet.lists import read_classes
from stnet.video import count_packets, iter_frames, open_video, read_frames

RESULTS = "check_results.jsonl"
REPORT = "check_report.json"
SUMMARY = "check_summary.png"
_RESULTS_HEADER = {"stnet": "data check results", "version": 1}
_HASHED = 1 << 20  # duplicates: same size and the same SHA-256 of the first MiB
DEFAULT_MIN_FRAMES = 35  # one clip of the default recipe (T=7 segments x N=5 frames)
_DURATION_BINS = (0, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)  # seconds


@dataclass(frozen=True)
class Item:
    """One video file to check: where it is, its class name ("" when the source does not say) and split."""

    path: str
    label: str = ""
    split: str = ""


# ----------------------------------------------------------------------------------------------------
# Finding the videos (prepare's discovery) and probing one (in worker processes)
# ----------------------------------------------------------------------------------------------------


def discover(
    source: Path, lists: Sequence[str] = (), label_file: str | None = None, list_format: str = "auto"
) -> tuple[list[Item], dict]:
    """The videos of ``source`` as ``stnet prepare list`` finds them, and what planning found wrong.

    With ``lists``: the entries of those list files (``list_format``: prepare's ``--format``). Without:
    every video file under ``source``, labelled by its class folder when the tree is
    ``[split/]class/video`` (prepare's ``--folders``).
    """
    from stnet.prepare import _index_videos, plan_list

    problems: dict[str, Any] = {"missing": [], "refused": []}
    if lists:
        plan = plan_list(lists, source, False, label_file, list_format)
        folders = [j.source for j in plan.jobs if os.path.isdir(j.source)]
        if folders:
            raise DataError(
                f"{folders[0]} is a frame folder (a rawframe list): data check looks at video files; "
                "prepare reports unreadable frames"
            )
        problems = {"missing": plan.missing, "refused": plan.failures}
        return [Item(j.source, plan.classes[j.label], j.split) for j in plan.jobs], problems
    labelled: dict[str, Item] = {}
    with contextlib.suppress(DataError):  # no class folders: the videos have no label
        plan = plan_list([], source, True, None)
        labelled = {j.source: Item(j.source, plan.classes[j.label], j.split) for j in plan.jobs}
    items = [labelled.get(str(source / rel), Item(str(source / rel))) for rel in _index_videos(source)]
    return items, problems


def head_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the first MiB of ``path``."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(_HASHED)).hexdigest()


def probe(path: str, decode: bool = False) -> dict[str, Any]:
    """What ``path`` holds: ``size``, ``head`` (digest) and either ``error`` (why it cannot be read) or
    ``codec``, ``width``, ``height``, ``fps``, ``frames``, ``seconds``. Never raises.

    ``frames`` is the number of video packets (or, with ``decode``, of decoded frames); the first frame
    is always decoded, so a stream without a decodable frame is an error.
    """
    result: dict[str, Any] = {"decoded": decode}
    try:
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
    except DataError as e:
        result["error"] = str(e)
    except OSError as e:
        result["error"] = os_error_line(e)
    except Exception as e:  # a bad file must never stop the check
        result["error"] = f"unexpected error: {type(e).__name__}: {e}"
    return result


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


def _probe_all(
    todo: list[tuple[str, int, int]], decode: bool, workers: int, progress: bool, results_file: Path
) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Probe each (path, size, mtime) of ``todo``; append each result to ``results_file`` as it comes."""
    from tqdm import tqdm

    from stnet.prepare import _worker_init

    new = not results_file.exists()
    torn = not new and _ends_mid_line(results_file)  # a killed run's half-written last line
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    bar = tqdm(total=len(todo), unit="video", desc="check", disable=not progress, dynamic_ncols=True)
    try:
        with open(results_file, "a", encoding="utf-8", errors="surrogateescape") as f:
            if new:
                f.write(json.dumps(_RESULTS_HEADER) + "\n")
            elif torn:
                f.write("\n")  # the torn line stays unreadable; the next result starts a line of its own

            def record(key: tuple[str, int, int], result: dict[str, Any]) -> None:
                found[key] = result
                line = {"path": key[0], "stat_size": key[1], "mtime_ns": key[2], "result": result}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                bar.update()

            if workers <= 1:
                for key in todo:
                    record(key, probe(key[0], decode))
                return found
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with cf.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
            ) as pool:
                futures = {pool.submit(probe, key[0], decode): key for key in todo}
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


def build_report(
    source: Path, items: Sequence[Item], results: dict[str, dict[str, Any]], problems: dict, min_frames: int
) -> dict[str, Any]:
    """The check's findings from each item's probe result (by path)."""
    unreadable, readable, too_short = [], [], []
    for item in items:
        result = results[item.path]
        if "error" in result:
            unreadable.append({"path": item.path, "reason": result["error"]})
        else:
            readable.append((item, result))
            if result["frames"] < min_frames:
                too_short.append(
                    {"path": item.path, "frames": result["frames"], "seconds": result["seconds"]}
                )
    groups: dict[tuple[int, str], list[str]] = {}
    for path in dict.fromkeys(item.path for item in items):  # a video listed twice is one file
        result = results[path]
        if result.get("size"):  # empty files are unreadable, not duplicates
            groups.setdefault((result["size"], result["head"]), []).append(path)
    duplicates = [paths for paths in groups.values() if len(paths) > 1]
    bins = [_duration_bin(r["seconds"]) for _, r in readable if r.get("seconds") is not None]
    order = {b: i for i, b in enumerate(_duration_bin(x) for x in (*_DURATION_BINS[:-1], 1e9))}
    return {
        "source": str(source),
        "videos": len(items),
        "readable": len(readable),
        "bytes": sum(r.get("size", 0) for r in results.values()),
        "unreadable": unreadable,
        "too_short": too_short,
        "suspect": [{"path": i.path, "warning": r["warning"]} for i, r in readable if "warning" in r],
        "min_frames": min_frames,
        "duplicates": duplicates,
        "missing": problems.get("missing", []),
        "refused": problems.get("refused", []),
        "classes": _ordered(Counter(i.label for i in items if i.label)),
        "splits": _ordered(Counter(i.split for i in items if i.split)),
        "histograms": {
            "seconds": dict(sorted(Counter(bins).items(), key=lambda kv: order[kv[0]])),
            "fps": _ordered(Counter(f"{r['fps']:g}" for _, r in readable)),
            "resolution": _ordered(Counter(f"{r['width']}x{r['height']}" for _, r in readable)),
            "codec": _ordered(Counter(r["codec"] for _, r in readable)),
        },
    }


def plot_summary(report: dict[str, Any], path: Path) -> Path:
    """The report's histograms and class balance as one PNG (matplotlib's Agg canvas)."""
    from stnet.plots import _new_figure, _save_png

    fig = _new_figure(14, 8)
    axes = fig.subplots(2, 3)
    panels = [
        ("duration", report["histograms"]["seconds"]),
        ("frame rate (fps)", report["histograms"]["fps"]),
        ("resolution", report["histograms"]["resolution"]),
        ("codec", report["histograms"]["codec"]),
        ("videos per class", report["classes"]),
        (
            "files",
            {
                "readable": report["readable"],
                "unreadable": len(report["unreadable"]),
                "too short": len(report["too_short"]),
                "duplicates": sum(len(g) - 1 for g in report["duplicates"]),
                "missing": len(report["missing"]),
            },
        ),
    ]
    for ax, (title, counts) in zip(axes.flat, panels, strict=True):
        names, values = list(counts), list(counts.values())
        ax.bar(range(len(values)), values, color="tab:blue")
        ax.set_title(title)
        if len(names) <= 30:
            ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right")
        else:
            ax.set_xlabel(f"{len(names)} classes, most videos first")
        if not values:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{report['source']}: {report['videos']} videos, {human_bytes(report['bytes'])}")
    return _save_png(fig, path)


def check(
    source: Path,
    out: Path,
    *,
    lists: Sequence[str] = (),
    label_file: str | None = None,
    list_format: str = "auto",
    workers: int = 1,
    decode: bool = False,
    min_frames: int = DEFAULT_MIN_FRAMES,
    progress: bool = True,
) -> dict[str, Any]:
    """Check the videos of ``source`` (see the module doc); write the report and the PNG into ``out``."""
    if not source.is_dir():
        raise DataError(f"source folder not found: {source}")
    refuse_overwriting_inputs([out], [str(source), *lists, *([label_file] if label_file else [])])
    items, problems = discover(source, lists, label_file, list_format)
    if not items:
        raise DataError(f"no video files found in {source}")
    results_file = out / RESULTS
    with folder_lock(out, "data check"):
        if not results_file.exists():
            for name in (REPORT, SUMMARY):
                if (out / name).exists():
                    raise UserError(
                        f"{out / name} exists and stnet data check did not write it; nothing was written: "
                        "move it away or choose another --out folder"
                    )
        known = _load_results(results_file)
        keys: dict[str, tuple[str, int, int]] = {}
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for item in dict.fromkeys(i.path for i in items):
            key = _key(item)
            if key is None:
                results[item] = probe(item)  # gone or unreadable: probe says why
                continue
            keys[item] = key
            earlier = known.get(key)
            if earlier is not None and (earlier.get("decoded") or not decode):
                results[item] = earlier
            else:
                todo.append(key)
        probed = _probe_all(todo, decode, workers, progress, results_file)
        results.update({key[0]: result for key, result in probed.items()})
        report = build_report(source, items, results, problems, min_frames)
        report.update({"probed": len(todo), "reused": len(keys) - len(todo), "decoded_every_frame": decode})
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
        Path(args.source),
        out,
        lists=args.list or [],
        label_file=args.label_file,
        list_format=args.format,
        workers=args.workers,
        decode=args.decode,
        min_frames=args.min_frames,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(
        f"{report['source']}: {report['videos']} videos ({human_bytes(report['bytes'])}), "
        f"{report['readable']} readable, {len(report['unreadable'])} unreadable, "
        f"{len(report['duplicates'])} group(s) of duplicates, {len(report['too_short'])} shorter than "
        f"{report['min_frames']} frames, {len(report['missing'])} listed but missing"
    )
    for entry in report["unreadable"][:10]:
        print(f"  unreadable: {entry['path']}: {entry['reason']}")
    for entry in report["suspect"][:10]:
        print(f"  suspect: {entry['path']}: {entry['warning']}")
    for group in report["duplicates"][:10]:
        print(f"  duplicates: {', '.join(group)}")
    for name, counts in report["histograms"].items():
        print(f"  {name}: " + ", ".join(f"{k} ({v})" for k, v in list(counts.items())[:8]))
    if report["classes"]:
        counts = list(report["classes"].values())
        print(f"  classes: {len(counts)}, {min(counts)}-{max(counts)} videos each")
    print(f"  report: {out / REPORT}, summary: {out / SUMMARY}")
    return 0


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


def register_cli(subparsers: Any) -> None:
    """Add ``data`` (with ``check`` and ``stats``) to an argparse sub-parser collection."""
    p = subparsers.add_parser("data", help="check a video source before preparing it; stats of a store")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser(
        "check",
        help="scan videos without converting: unreadable files, histograms, classes, duplicates",
        description="Scan SOURCE as `stnet prepare list` finds it (class folders, or --list files "
        "relative to SOURCE) without converting: unreadable files with their reasons, duration/fps/"
        "resolution/codec histograms, class counts, duplicates (same size and hash of the first MiB), "
        "videos shorter than one clip. Writes OUT/check_report.json and OUT/check_summary.png; a rerun "
        "resumes from OUT/check_results.jsonl, probing only new or changed files.",
    )
    c.add_argument("source", metavar="SOURCE", help="the video folder")
    c.add_argument("--out", required=True, metavar="DIR", help="folder for the report, PNG and results")
    c.add_argument("--list", action="append", metavar="[SPLIT=]FILE", help="annotation list (repeat)")
    c.add_argument("--label-file", "--label_file", dest="label_file", metavar="FILE", help="class names")
    c.add_argument(
        "--format",
        choices=("auto", "video", "csv"),
        default="auto",
        help="list format, as prepare list's: video ('path label'), csv ('path,label'), auto (default)",
    )
    c.add_argument(
        "--workers",
        type=workers_arg(1),
        default=max(1, min(8, os.cpu_count() or 1)),
        metavar="K",
        help="probing processes (default: CPU count, at most 8)",
    )
    c.add_argument("--decode", action="store_true", help="decode every frame (slower; exact frame counts)")
    c.add_argument(
        "--min-frames",
        "--min_frames",
        dest="min_frames",
        type=int_arg(1),
        default=DEFAULT_MIN_FRAMES,
        metavar="K",
        help=f"report videos with fewer frames: one clip, T x N (default {DEFAULT_MIN_FRAMES} = 7 x 5)",
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_check)
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
    "build_report",
    "check",
    "discover",
    "plot_summary",
    "probe",
    "register_cli",
    "store_stats",
]
