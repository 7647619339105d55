"""``stnet prepare``: turn folders of videos into a training-ready clip store, robustly and resumably.

Three front ends build a *plan* (which source video goes to which split with which label):

* ``ucf101``: the official ``classInd.txt``/``trainlist0X.txt``/``testlist0X.txt`` split X (class and
  file names matched case-insensitively), or on request a random split *by actor group* ``gXX``;
* ``kinetics``: the Kinetics CSVs; the label file is the reference's ``generate_label`` (sorted class
  names of the train CSV, ``<class name> <index>`` lines); missing videos are counted and listed;
* ``list``: ``relative/path label`` lists (MMAction2 style), or a folder-per-class tree.

One back end executes it: every video is decoded with PyAV (every frame, counted as decoded), resized
to the short side with Pillow bilinear, JPEG-encoded and written as one ``.stclip`` file
(:mod:`stnet.clipstore`) under ``OUT/clips/``, atomically. Then ``classes.txt``, ``train.txt``,
``val.txt`` and ``prepare_report.json`` are written. The source is only ever read. A rerun trusts
only complete clip files and skips them; leftovers of a killed run are removed. A bad video is
skipped and listed with its reason; the exit status is 1 only when a split that was asked for ends up
with no video (or, with ``--strict``, when anything failed or was missing).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import multiprocessing
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from stnet import clipstore
from stnet.argtypes import workers_arg
from stnet.errors import DataError
from stnet.fileio import atomic_write_bytes
from stnet.transforms import resized_size
from stnet.video import is_video_file, iter_frames, open_video

__all__ = [
    "Job",
    "Plan",
    "Settings",
    "convert_video",
    "execute",
    "plan_kinetics",
    "plan_list",
    "plan_ucf101",
    "register_cli",
]

SPLITS = ("train", "val")
REPORT = "prepare_report.json"
CLIPS = "clips"
_GROUP = re.compile(r"_g(\d+)_c\d+$", re.IGNORECASE)
_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class Settings:
    """How frames are stored; a rerun into the same folder must use the same settings."""

    short_side: int
    fixed_aspect: bool = False
    quality: int = 90
    keep_partial: bool = False


@dataclass(frozen=True)
class Job:
    """One video to prepare: its source, its output (relative to OUT) and where it is listed."""

    split: str
    source: str
    output: str
    label: int


@dataclass
class Plan:
    """What a front end found: classes, jobs, entries whose video is missing, and how the split was made."""

    command: str
    classes: list[str]
    jobs: list[Job] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)  # entries refused while planning
    split: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Converting one video (runs in worker processes)
# ----------------------------------------------------------------------------------------------------


def _probe(path: str) -> tuple[float, int]:
    """The stream's frame rate and the frame count its header announces (0: none; never trusted)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        return (float(stream.average_rate) if stream.average_rate else 0.0), int(stream.frames or 0)


def convert_video(source: str | os.PathLike, dest: str | os.PathLike, settings: Settings) -> dict[str, Any]:
    """Decode ``source`` and write it as the clip file ``dest``; DataError (nothing written) if it fails.

    Returns ``{"frames", "width", "height"}`` and maybe a ``"warning"``: when ``keep_partial`` kept the
    frames decoded before an error, or when fewer frames decoded than the header announces (a truncated
    AVI decodes cleanly up to its cut; headers also lie, so this is only reported).
    """
    fps, announced = _probe(str(source))
    frames = iter_frames(source)
    warning = None
    with clipstore.ClipWriter(dest, fps) as writer:
        while True:
            try:
                image = next(frames)
            except StopIteration:
                break
            except DataError as e:
                if not (settings.keep_partial and writer.num_frames):
                    raise
                warning = f"kept {writer.num_frames} frames decoded before an error: {e}"
                break
            size = resized_size(*image.size, settings.short_side, fixed_aspect=settings.fixed_aspect)
            if size != image.size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            writer.add_image(image, settings.quality)
        width, height = writer.size or (0, 0)
        result: dict[str, Any] = {"frames": writer.num_frames, "width": width, "height": height}
    if warning is None and announced > result["frames"]:
        warning = f"decoded {result['frames']} frames, the header announces {announced} (truncated file?)"
    if warning:
        result["warning"] = warning
    return result


def _work(source: str, dest: str, settings: Settings) -> tuple[bool, dict[str, Any] | str]:
    """Worker entry: never raises for a bad video, returns ``(ok, result or reason)``."""
    try:
        return True, convert_video(source, dest, settings)
    except DataError as e:
        return False, str(e)
    except MemoryError:
        return False, "out of memory while decoding"
    except Exception as e:  # a bad input must never stop the run
        return False, f"unexpected error: {type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------------------------
# Front ends: building the plan
# ----------------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    """A class name as a folder name: spaces and unusual characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9._()+-]+", "_", name).strip("_") or "_"


def _index_videos(source: Path) -> list[Path]:
    """Every video file under ``source`` (relative paths, sorted); the source must be a folder."""
    if not source.is_dir():
        raise DataError(f"source folder not found: {source}")
    found = []
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        base = Path(folder).relative_to(source)
        found += [base / f for f in sorted(files) if is_video_file(f)]
    return found


def _find_annotations(source: Path, given: str | None, split: int) -> Path | None:
    names = ("classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt")
    if given:
        folder = Path(given)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)} (the official UCF101 split files)")
        return folder
    for folder in (source / "ucfTrainTestlist", source.parent / "ucfTrainTestlist", source, source.parent):
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def _read_lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]


def plan_ucf101(
    source: Path, annotations: str | None, split: int, random_split: float | None, seed: int
) -> Plan:
    """UCF101 with the official split ``split`` (1–3), or a random split by actor group on request."""
    videos = _index_videos(source)
    if random_split is not None:
        return _ucf_random(source, videos, random_split, seed)
    folder = _find_annotations(source, annotations, split)
    if folder is None:
        raise DataError(
            f"no official UCF101 split files (classInd.txt, trainlist0{split}.txt, testlist0{split}.txt) "
            f"in or next to {source}: pass --annotations DIR (the ucfTrainTestlist folder), or ask for "
            "the reference's random split with --random-split 0.8"
        )
    classes: list[str] = []
    for line in _read_lines(folder / "classInd.txt"):
        number, _, name = line.partition(" ")
        if not number.isdigit() or int(number) != len(classes) + 1 or not name.strip():
            raise DataError(
                f"{folder / 'classInd.txt'}: expected '<1-based index> <class name>' lines, got {line!r}"
            )
        classes.append(name.strip())
    label_of = {name.lower(): i for i, name in enumerate(classes)}
    by_path = {str(v).replace(os.sep, "/").lower(): v for v in videos}
    by_name: dict[str, list[Path]] = {}
    for v in videos:
        by_name.setdefault(v.name.lower(), []).append(v)
    plan = Plan("ucf101", classes, split={"kind": "official", "split": split, "annotations": str(folder)})
    for split_name, list_name in (("train", f"trainlist0{split}.txt"), ("val", f"testlist0{split}.txt")):
        for line in _read_lines(folder / list_name):
            entry = line.split()[0].replace("\\", "/")
            class_part = entry.split("/")[0] if "/" in entry else ""
            label = label_of.get(class_part.lower())
            if label is None:
                plan.failures.append(
                    {
                        "split": split_name,
                        "source": entry,
                        "reason": f"class {class_part!r} is not in classInd.txt",
                    }
                )
                continue
            found = by_path.get(entry.lower())
            if found is None and len(by_name.get(entry.rsplit("/", 1)[-1].lower(), [])) == 1:
                found = by_name[entry.rsplit("/", 1)[-1].lower()][0]
            if found is None:
                plan.missing.append({"split": split_name, "entry": entry})
                continue
            output = f"{CLIPS}/{_safe_name(classes[label])}/{found.stem}{clipstore.SUFFIX}"
            plan.jobs.append(Job(split_name, str(source / found), output, label))
    return plan


def _ucf_random(source: Path, videos: list[Path], fraction: float, seed: int) -> Plan:
    if not 0 < fraction < 1:
        raise DataError(f"--random-split must be a train fraction between 0 and 1, got {fraction}")
    in_class = [v for v in videos if len(v.parts) == 2]
    classes = sorted({v.parts[0] for v in in_class})  # the reference's label order: case-sensitive sorted()
    if not classes:
        raise DataError(f"{source} holds no <Class>/<video> files")

    def group(v: Path) -> str:
        m = _GROUP.search(v.stem)
        return f"g{int(m.group(1)):02d}" if m else v.stem

    groups = sorted({group(v) for v in in_class})
    shuffled = groups[:]
    random.Random(seed).shuffle(shuffled)
    n_train = min(max(round(fraction * len(groups)), 1), len(groups) - 1) if len(groups) > 1 else len(groups)
    train_groups = set(shuffled[:n_train])
    plan = Plan(
        "ucf101",
        classes,
        split={
            "kind": "random-by-group",
            "train_fraction": fraction,
            "seed": seed,
            "train_groups": sorted(train_groups),
            "val_groups": sorted(set(groups) - train_groups),
        },
    )
    label_of = {name: i for i, name in enumerate(classes)}
    for v in in_class:
        split = "train" if group(v) in train_groups else "val"
        output = f"{CLIPS}/{_safe_name(v.parts[0])}/{v.stem}{clipstore.SUFFIX}"
        plan.jobs.append(Job(split, str(source / v), output, label_of[v.parts[0]]))
    return plan


def _csv_rows(path: Path) -> tuple[list[dict[str, str]], str | None]:
    """Rows of a Kinetics CSV as dicts, and the split its file name suggests (for CSVs without one)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    columns = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    if rows and "youtube_id" in (c.strip().lower() for c in rows[0]):
        columns = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
    missing = {"youtube_id", "time_start", "time_end"} - set(columns)  # the test CSV has no label
    if missing:
        raise DataError(
            f"{path}: the header lacks {', '.join(sorted(missing))} "
            "(expected label,youtube_id,time_start,time_end,split)"
        )
    stem = path.stem.lower()
    guess = next((s for key, s in _SPLIT_NAMES.items() if key in stem), None)
    return [dict(zip(columns, (c.strip() for c in r), strict=False)) for r in rows], guess


def plan_kinetics(csvs: Sequence[str], source: Path, label_file: str | None) -> Plan:
    """Kinetics CSVs → jobs; labels from the train rows (the reference's generate_label) or ``label_file``."""
    table: list[tuple[str, dict[str, str], Path]] = []
    for name in csvs:
        rows, guess = _csv_rows(Path(name))
        for row in rows:
            split = _SPLIT_NAMES.get(row.get("split", "").lower()) or guess
            if split is None:
                raise DataError(
                    f"{name}: rows have no split column and the file name does not say train/val/test"
                )
            table.append((split, row, Path(name)))
    if label_file:
        classes = _read_label_file(Path(label_file))
    else:
        classes = sorted(
            {row.get("label", "").strip('"') for split, row, _ in table if split == "train"} - {""}
        )
        if not classes:
            raise DataError(
                "the label map comes from the train CSV (the reference's generate_label): pass it too "
                "(--csv train.csv) or give --label-file"
            )
    label_of = {name: i for i, name in enumerate(classes)}
    index: dict[str, Path] = {}
    for v in _index_videos(source):
        index.setdefault(v.stem, v)
    plan = Plan(
        "kinetics",
        classes,
        split={
            "kind": "csv",
            "csv": [str(c) for c in csvs],
            "label_file": label_file or "from the train CSV",
        },
    )
    seen: set[tuple[str, str]] = set()
    ignored = 0
    for split, row, _ in table:
        if split == "test":
            ignored += 1
            continue
        try:
            stem = (
                f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            )
        except ValueError:
            plan.failures.append(
                {"split": split, "source": ",".join(row.values()), "reason": "bad time_start/time_end"}
            )
            continue
        if (split, stem) in seen:
            continue
        seen.add((split, stem))
        label = label_of.get(row.get("label", "").strip('"'))
        if label is None:
            plan.failures.append(
                {
                    "split": split,
                    "source": stem,
                    "reason": f"label {row.get('label', '')!r} is not in the train label map",
                }
            )
            continue
        found = index.get(stem) or index.get(row["youtube_id"])
        if found is None:
            plan.missing.append({"split": split, "entry": stem})
            continue
        output = f"{CLIPS}/{_safe_name(classes[label])}/{stem}{clipstore.SUFFIX}"
        plan.jobs.append(Job(split, str(source / found), output, label))
    plan.notes["ignored_test_rows"] = ignored
    return plan


def _read_label_file(path: Path) -> list[str]:
    names: dict[int, str] = {}
    try:
        lines = _read_lines(path)
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    for line in lines:
        name, _, index = line.rpartition(" ")
        if not index.isdigit() or not name:
            raise DataError(f"{path}: expected '<class name> <index>' lines, got {line!r}")
        names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1}, each once")
    return [names[i] for i in range(len(names))]


def _parse_list_arg(value: str) -> tuple[str, Path]:
    split, eq, file = value.partition("=")
    if eq and _SPLIT_NAMES.get(split.lower()) in SPLITS:
        return _SPLIT_NAMES[split.lower()], Path(file)
    path = Path(value)
    stem = path.stem.lower()
    for key, name in _SPLIT_NAMES.items():
        if key in stem and name in SPLITS:
            return name, path
    if "test" in stem:
        return "val", path
    return "train", path


def plan_list(lists: Sequence[str], root: Path, folders: bool, label_file: str | None) -> Plan:
    """``relative/path label`` lists (labels: integers or class names), or with ``folders`` a class tree."""
    entries: list[tuple[str, str, str]] = []  # split, relative path, label text
    if folders:
        if not root.is_dir():
            raise DataError(f"root folder not found: {root}")
        split_roots = [(s, root / s) for s in SPLITS if (root / s).is_dir()] or [("train", root)]
        for split, base in split_roots:
            for v in _index_videos(base):
                if len(v.parts) == 2:
                    entries.append((split, str((base / v).relative_to(root)), v.parts[0]))
    for value in lists:
        split, path = _parse_list_arg(value)
        try:
            lines = _read_lines(path)
        except FileNotFoundError:
            raise DataError(f"list file not found: {path}") from None
        for line in lines:
            if line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"{path}: expected 'relative/path label' lines, got {line!r}")
            entries.append((split, parts[0], parts[1]))
    if not entries:
        raise DataError("nothing to prepare: give --list FILE (relative/path label lines) or --folders")
    numeric = all(label.isdigit() for _, _, label in entries)
    if label_file:
        classes = _read_label_file(Path(label_file))
    elif numeric:
        top = max(int(label) for _, _, label in entries)
        classes = [_class_name(entries, i) for i in range(top + 1)]
    else:
        classes = sorted(
            {label for split, _, label in entries if split == "train"} or {e[2] for e in entries}
        )
    label_of = {name: i for i, name in enumerate(classes)}
    plan = Plan(
        "list",
        classes,
        split={"kind": "folders" if folders else "lists", "lists": list(lists), "root": str(root)},
    )
    for split, rel, label_text in entries:
        label = int(label_text) if numeric else label_of.get(label_text)
        if label is None or label >= len(classes):
            plan.failures.append({"split": split, "source": rel, "reason": f"unknown class {label_text!r}"})
            continue
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            plan.failures.append(
                {"split": split, "source": rel, "reason": "the path must be relative to --root"}
            )
            continue
        if not (root / rel_path).exists():
            plan.missing.append({"split": split, "entry": rel})
            continue
        output = f"{CLIPS}/{rel_path.with_suffix('').as_posix()}{clipstore.SUFFIX}"
        plan.jobs.append(Job(split, str(root / rel_path), output, label))
    return plan


def _class_name(entries: list[tuple[str, str, str]], index: int) -> str:
    """A name for integer label ``index``: the one parent folder its videos share, else ``class<index>``."""
    parents = {Path(rel).parent.name for _, rel, label in entries if int(label) == index}
    return parents.pop() if len(parents) == 1 and "" not in parents else f"class{index}"


# ----------------------------------------------------------------------------------------------------
# The back end: executing a plan
# ----------------------------------------------------------------------------------------------------


def _remove_leftovers(clips: Path) -> int:
    """Delete temporary files a killed run left behind (``.<name>.stclip.<random>.tmp``)."""
    removed = 0
    if not clips.is_dir():
        return 0
    for folder, _, files in os.walk(clips):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp") and clipstore.SUFFIX in name:
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _check_settings(out: Path, settings: Settings) -> None:
    report = out / REPORT
    if not report.is_file():
        return
    try:
        previous = json.loads(report.read_text(encoding="utf-8"))
        before = Settings(**{k: previous["settings"][k] for k in asdict(settings)})
    except (ValueError, KeyError, TypeError):
        return
    if before != settings:
        changed = ", ".join(
            f"{k} {getattr(before, k)} → {getattr(settings, k)}"
            for k in asdict(settings)
            if getattr(before, k) != getattr(settings, k)
        )
        raise DataError(
            f"{out} was prepared with other settings ({changed}); use another --out folder "
            "(or delete this one)"
        )


def _write_report(out: Path, report: dict[str, Any]) -> None:
    atomic_write_bytes(out / REPORT, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())


def _run_jobs(
    todo: list[tuple[str, str]], settings: Settings, workers: int, progress: bool
) -> dict[str, tuple[bool, dict[str, Any] | str]]:
    """Convert ``(source, dest)`` pairs; results by dest. Worker crashes fail only the videos in flight."""
    from tqdm import tqdm

    results: dict[str, tuple[bool, dict[str, Any] | str]] = {}
    bar = tqdm(total=len(todo), unit="video", desc="prepare", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for source, dest in todo:
                results[dest] = _work(source, dest, settings)
                bar.update()
            return results
        queue = list(reversed(todo))
        # fork: workers inherit the imported modules (importing stnet, and so torch, costs ~1 s per process)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        while queue:
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                running: dict[cf.Future, tuple[str, str]] = {}
                try:
                    while queue or running:
                        while queue and len(running) < 4 * workers:
                            source, dest = queue.pop()
                            running[pool.submit(_work, source, dest, settings)] = (source, dest)
                        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                        for future in done:
                            source, dest = running.pop(future)
                            results[dest] = future.result()
                            bar.update()
                except cf.process.BrokenProcessPool:
                    for _source, dest in running.values():
                        if dest not in results:
                            results[dest] = (
                                False,
                                "a worker process crashed while decoding (this file or one "
                                "decoded at the same time)",
                            )
                            bar.update()
    finally:
        bar.close()
    return results


def execute(
    plan: Plan,
    out: str | os.PathLike,
    settings: Settings,
    *,
    workers: int = 1,
    strict: bool = False,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> int:
    """Prepare every job of ``plan`` into ``out``, write lists, classes and report; return the exit code."""
    started = time.monotonic()
    out = Path(out)
    sources = {Path(j.source).resolve().parent for j in plan.jobs}
    if out.resolve() in sources:
        raise DataError(f"--out {out} is a source folder; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    report: dict[str, Any] = {
        "complete": False,
        "command": plan.command,
        "options": options or {},
        "settings": asdict(settings),
        "split": plan.split,
        **plan.notes,
    }
    _write_report(out, report)
    removed = _remove_leftovers(out / CLIPS)

    outputs: dict[str, str] = {}  # dest → source (a video listed twice is converted once)
    for job in plan.jobs:
        outputs.setdefault(job.output, job.source)
    clip_info: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, str]] = []
    for output, source in outputs.items():
        dest = out / output
        if clipstore.is_complete(dest):
            info = clipstore.read_info(dest)
            clip_info[output] = {
                "frames": info.num_frames,
                "width": info.width,
                "height": info.height,
                "reused": True,
            }
        else:
            todo.append((source, str(dest)))
    results = _run_jobs(todo, settings, workers, progress)
    failures = list(plan.failures)
    warnings_: list[dict[str, str]] = []
    reasons: dict[str, str] = {}
    for source, dest in todo:
        ok, value = results[dest]
        output = Path(dest).relative_to(out).as_posix()
        if ok:
            assert isinstance(value, dict)
            clip_info[output] = value
            if "warning" in value:
                warnings_.append({"source": source, "warning": value["warning"]})
        else:
            reasons[output] = str(value)

    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        jobs = [j for j in plan.jobs if j.split == split]
        ok = [j for j in jobs if j.output in clip_info]
        for job in jobs:
            if job.output in reasons:
                failures.append({"split": split, "source": job.source, "reason": reasons[job.output]})
        lines[split] = [f"{j.output} {j.label}" for j in ok]
        counts[split] = {
            "listed": len(jobs)
            + sum(m["split"] == split for m in plan.missing)
            + sum(f["split"] == split for f in plan.failures),
            "found": len(jobs),
            "prepared": len(ok),
            "reused": sum(1 for j in ok if clip_info[j.output].get("reused")),
            "failed": sum(f["split"] == split for f in failures),
            "missing": sum(m["split"] == split for m in plan.missing),
            "frames": sum(clip_info[j.output]["frames"] for j in ok),
        }
    for split in SPLITS:
        atomic_write_bytes(out / f"{split}.txt", "".join(f"{line}\n" for line in lines[split]).encode())
    classes_text = "".join(f"{name} {i}\n" for i, name in enumerate(plan.classes))
    atomic_write_bytes(out / "classes.txt", classes_text.encode())
    elapsed = time.monotonic() - started
    report.update(
        {
            "complete": True,
            "classes": len(plan.classes),
            "counts": counts,
            "failures": failures,
            "missing": plan.missing,
            "warnings": warnings_,
            "leftovers_removed": removed,
            "elapsed_s": round(elapsed, 3),
            "videos_per_s": round(len(todo) / elapsed, 2) if elapsed > 0 else None,
        }
    )
    _write_report(out, report)

    converted = len(todo) - len(reasons)
    print(
        f"{out}: {converted} videos converted, {len(outputs) - len(todo)} reused, "
        f"{len(todo) - converted} failed in {elapsed:.1f} s",
        file=sys.stderr,
    )
    for split in SPLITS:
        c = counts[split]
        if not c["listed"]:
            continue
        print(
            f"  {split}: {c['prepared']} of {c['listed']} listed "
            f"({c['failed']} failed, {c['missing']} missing)",
            file=sys.stderr,
        )
    if failures or plan.missing:
        print(f"  failures and missing videos are listed in {out / REPORT}", file=sys.stderr)
    empty = [s for s in SPLITS if counts[s]["listed"] and not counts[s]["prepared"]]
    if empty:
        print(
            f"stnet: error: no video of the {' and '.join(empty)} split could be prepared; "
            f"see {out / REPORT}",
            file=sys.stderr,
        )
        return 1
    if strict and (failures or plan.missing):
        print(
            f"stnet: error: --strict: {len(failures)} failed and {len(plan.missing)} missing videos",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    if args.short_side < 1:
        raise DataError(f"--short-side must be a positive number of pixels, got {args.short_side}")
    if not 1 <= args.quality <= 100:
        raise DataError(f"--quality must be in 1..100, got {args.quality}")
    if args.workers < 1:
        raise DataError(f"--workers must be >= 1, got {args.workers}")
    return Settings(args.short_side, args.fixed_aspect, args.quality, args.keep_partial)


def _no_rest(rest: Sequence[str]) -> None:
    if rest:
        raise DataError(f"unexpected arguments: {' '.join(rest)}")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options as given, for the report."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command", "quiet")}


def _run(args: argparse.Namespace, rest: Sequence[str], make_plan: Callable[[], Any]) -> int:
    _no_rest(rest)
    settings = _settings(args)
    return execute(
        make_plan(),
        args.out,
        settings,
        workers=args.workers,
        strict=args.strict,
        progress=not args.quiet,
        options=_options(args),
    )


def cmd_ucf101(args: argparse.Namespace, rest: Sequence[str]) -> int:
    return _run(
        args,
        rest,
        lambda: plan_ucf101(Path(args.source), args.annotations, args.split, args.random_split, args.seed),
    )


def cmd_kinetics(args: argparse.Namespace, rest: Sequence[str]) -> int:
    return _run(args, rest, lambda: plan_kinetics(args.csv, Path(args.source), args.label_file))


def cmd_list(args: argparse.Namespace, rest: Sequence[str]) -> int:
    return _run(
        args, rest, lambda: plan_list(args.list or [], Path(args.root), args.folders, args.label_file)
    )


def _common(p: argparse.ArgumentParser, short_side: int) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume in it)")
    p.add_argument(
        "--workers",
        type=workers_arg(1),
        default=max(1, min(8, os.cpu_count() or 1)),
        metavar="K",
        help="decoding processes (default: CPU count, at most 8)",
    )
    p.add_argument(
        "--short-side",
        "--short_side",
        dest="short_side",
        type=int,
        default=short_side,
        metavar="PX",
        help=f"resize frames to this short side, keeping the aspect ratio (default {short_side})",
    )
    p.add_argument(
        "--fixed-aspect",
        "--fixed_aspect",
        dest="fixed_aspect",
        action="store_true",
        help="the reference's fixed 4:3 frames instead (171x128 at 128, 341x256 at 256)",
    )
    p.add_argument("--quality", type=int, default=90, metavar="Q", help="JPEG quality 1-100 (default 90)")
    p.add_argument(
        "--keep-partial",
        "--keep_partial",
        dest="keep_partial",
        action="store_true",
        help="keep the frames decoded before a decode error instead of skipping the video",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any video failed or is missing"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register_cli(subparsers: Any) -> None:
    """Add ``prepare`` (with ``ucf101``, ``kinetics``, ``list``) to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "prepare",
        help="turn videos into a training-ready clip store (UCF101, Kinetics, your own lists)",
        description="Decode videos once into compact clip files (resized JPEG frames, any frame readable "
        "alone) plus classes.txt, train.txt, val.txt and prepare_report.json. The source is never "
        "modified; a rerun skips finished videos; bad videos are skipped and listed with their reason.",
    )
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    u = sub.add_parser(
        "ucf101",
        help="UCF101: official split 1-3 (or a random split by actor group)",
        description="SOURCE holds <Class>/v_<Class>_gXX_cYY.avi. The official split files "
        "(classInd.txt, trainlistXX.txt, testlistXX.txt) are looked up in SOURCE/ucfTrainTestlist, "
        "next to SOURCE, or given with --annotations.",
    )
    u.add_argument("--source", required=True, metavar="DIR", help="the UCF-101 video folder")
    u.add_argument(
        "--annotations", metavar="DIR", help="folder of classInd.txt, trainlist0X.txt, testlist0X.txt"
    )
    u.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default 1)")
    u.add_argument(
        "--random-split",
        "--random_split",
        dest="random_split",
        type=float,
        metavar="FRACTION",
        help="instead: random split with this train fraction of actor groups gXX (reference: 0.8)",
    )
    u.add_argument("--seed", type=int, default=0, help="seed of --random-split (default 0)")
    _common(u, 128)
    u.set_defaults(func=cmd_ucf101)

    k = sub.add_parser(
        "kinetics",
        help="Kinetics: CSVs label,youtube_id,time_start,time_end,split",
        description="Videos are found anywhere under SOURCE as <youtube_id>_<start:06d>_<end:06d>.* "
        "(e.g. <label>/<id>_000010_000020.mp4, or flat) or <youtube_id>.*. The label file is the "
        "reference's: sorted class names of the train CSV. Missing videos are counted and listed.",
    )
    k.add_argument(
        "--csv", action="append", required=True, metavar="FILE", help="a Kinetics CSV (repeat: train, val)"
    )
    k.add_argument("--source", required=True, metavar="DIR", help="folder holding the downloaded videos")
    k.add_argument(
        "--label-file",
        "--label_file",
        dest="label_file",
        metavar="FILE",
        help="use this '<class name> <index>' label file instead of the train CSV's classes",
    )
    _common(k, 256)
    k.set_defaults(func=cmd_kinetics)

    li = sub.add_parser(
        "list",
        help="your own videos: 'relative/path label' lists or a folder per class",
        description="Each --list line is 'relative/path label' (label: an integer or a class "
        "name). The split comes from SPLIT=FILE or from the file name (train/val/test). With "
        "--folders, ROOT/<class>/<video> (or ROOT/train/..., ROOT/val/...) is used instead.",
    )
    li.add_argument(
        "--list", action="append", metavar="[SPLIT=]FILE", help="annotation list (repeat per split)"
    )
    li.add_argument("--root", required=True, metavar="DIR", help="folder the list paths are relative to")
    li.add_argument("--folders", action="store_true", help="read ROOT as one folder per class")
    li.add_argument(
        "--label-file",
        "--label_file",
        dest="label_file",
        metavar="FILE",
        help="class names: '<class name> <index>' lines",
    )
    _common(li, 256)
    li.set_defaults(func=cmd_list)
