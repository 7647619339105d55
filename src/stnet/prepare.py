"""``stnet prepare``: turn folders of videos into a training-ready clip store, robustly and resumably.

Five front ends build a *plan* (which source video goes to which split with which label); the
annotation parsers of the last three live in :mod:`stnet.formats`:

* ``ucf101``: the official ``classInd.txt``/``trainlist0X.txt``/``testlist0X.txt`` split X (class and
  file names matched case-insensitively), or on request a random split *by actor group* ``gXX``;
* ``kinetics``: the Kinetics CSVs; the label file is the reference's ``generate_label`` (sorted class
  names of the train CSV, ``<class name> <index>`` lines); missing videos are counted and listed; test
  rows with labels become a ``test`` split;
* ``hmdb51``: the official ``<class>_test_split<k>.txt`` files (test videos become ``val``);
* ``ssv2``: Something-Something V2's labels/train/validation JSON files and ``<id>.webm`` videos;
* ``list``: MMAction2 video or rawframe lists, PySlowFast CSVs, or a folder-per-class tree. A rawframe
  entry is a folder of JPEG frames; it is converted like a video, every listed frame (a frame missing
  fails that folder, as an unreadable video fails).

Each front end's options and planner are one :class:`InputForm` of :data:`INPUT_FORMS`, which
``stnet data check`` uses too: it scans exactly what prepare would convert.

One back end executes a plan: every video is decoded with PyAV (every frame, counted as decoded), resized
to the short side with Pillow bilinear, JPEG-encoded and written as one ``.stclip`` file
(:mod:`stnet.clipstore`) under ``OUT/clips/`` named after the source's path *with* its extension (so
two sources never share a clip), atomically. Then ``classes.txt``, ``train.txt``, ``val.txt`` (and
``test.txt``) and ``prepare_report.json`` are written.

Safety: the source is only ever read; ``OUT`` may not be, or hold, an input; the report lists every
file prepare writes (``files``), and a file at one of those paths that an earlier run did not list is
never replaced (one-line error, nothing written). One run at a time holds ``OUT``'s lock. A rerun
trusts only complete clip files converted from the same source (size, mtime, hash of both ends) and
skips them; leftovers of a killed run are removed. A bad video is skipped and listed with its reason.
Ctrl-C and SIGTERM stop cleanly (report: incomplete); decoding workers die with their parent. An
error writing the output (full disk, read-only folder) stops the run with one line; a rerun finishes.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import ctypes
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import signal
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from PIL import Image

from stnet import clipstore, formats
from stnet.argtypes import float_arg, int_arg, workers_arg
from stnet.errors import DataError, OSFailure, StnetError, UserError, os_error_line
from stnet.fileio import atomic_write_bytes, folder_lock, human_bytes, refuse_overwriting_inputs
from stnet.lists import check_class_name, read_classes, read_lines, read_text
from stnet.sampling import source_index
from stnet.transforms import resized_size
from stnet.video import count_packets, is_video_file, iter_frames, open_video

__all__ = [
    "INPUT_FORMS",
    "InputForm",
    "Job",
    "Plan",
    "PrepareError",
    "Settings",
    "add_list_file_options",
    "add_worker_options",
    "convert_video",
    "execute",
    "index_videos",
    "merge",
    "plan_hmdb51",
    "plan_kinetics",
    "plan_list",
    "plan_ssv2",
    "plan_ucf101",
    "register_cli",
    "worker_init",
]

SPLITS = ("train", "val", "test")
LIST_SPLITS = ("train", "val")  # always written; test.txt only when there is a test split
REPORT = "prepare_report.json"
POSITIONS = "positions.json"  # a shard's: each list line's position in the whole plan
CLIPS = "clips"
_NAME_MAX = 255  # bytes in one file name (Linux, macOS, Windows)
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


class PrepareError(StnetError):
    """A prepare run that could not finish: an empty split, ``--strict``, or an error writing ``OUT``."""


@dataclass(frozen=True)
class Settings:
    """How frames are stored; a rerun into the same folder must use the same settings."""

    short_side: int
    fixed_aspect: bool = False
    quality: int = 90
    keep_partial: bool = False
    fps: float | None = None  # store at most this many frames per second (None: every frame)
    max_frames: int | None = None  # store at most this many frames per video, spread over all of it
    filename_tmpl: str = formats.FRAME_TEMPLATE  # the frame files of a frame folder (rawframe lists)
    frames_fps: float = 30.0  # the frame rate recorded for a frame folder (its files do not say)


@dataclass(frozen=True)
class Job:
    """One video to prepare: its source, its output (relative to OUT) and where it is listed."""

    split: str
    source: str
    output: str
    label: int
    where: str = ""  # "file:line" of the entry (or the folder) that asked for it
    frames: int | None = None  # a frame folder's frame count as its rawframe list gives it (else None)


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
    inputs: list[str] = field(default_factory=list)  # files and folders read: OUT must not hold them
    warnings: list[str] = field(default_factory=list)  # printed and reported

    def add(
        self, split: str, root: Path, rel: PurePosixPath, label: int, where: str, frames: int | None = None
    ) -> None:
        """Add the job of the video (or frame folder of ``frames`` listed frames) ``root/rel``, or a
        failure if its clip name cannot be stored."""
        output = clip_output(rel)
        longest = max(len(part.encode()) for part in output.split("/"))
        if longest > _NAME_MAX:
            self.failures.append(
                {
                    "split": split,
                    "source": str(root / rel),
                    "reason": f"the clip name would be {longest} bytes "
                    f"long (at most {_NAME_MAX}): rename the video",
                }
            )
            return
        self.jobs.append(Job(split, str(root / rel), output, label, where, frames))


# ----------------------------------------------------------------------------------------------------
# Converting one video (runs in worker processes)
# ----------------------------------------------------------------------------------------------------


def _probe(path: str) -> tuple[float, int]:
    """The stream's frame rate and the frame count its header announces (0: none; never trusted)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        return (float(stream.average_rate) if stream.average_rate else 0.0), int(stream.frames or 0)


def _stored_rate(source: str | os.PathLike, fps: float, settings: Settings, frames: int | None) -> float:
    """The frame rate the clip of ``source`` (``fps`` frames/s; a frame folder's ``frames`` frames, else
    None) stores: ``fps``, or lower when ``settings.fps`` asks for less or ``settings.max_frames`` would
    be exceeded (then the video is kept whole at a rate that fits, counting its frames from the packets,
    without decoding)."""
    rate = fps
    if settings.fps is not None:
        rate = min(rate, settings.fps)
    if settings.max_frames is not None:
        if frames is None:
            frames = count_packets(source)
        if frames > settings.max_frames:
            rate = min(rate, settings.max_frames * fps / frames)
    return rate


def convert_video(
    source: str | os.PathLike, dest: str | os.PathLike, settings: Settings, listed: int | None = None
) -> dict[str, Any]:
    """Decode ``source`` and write it as the clip file ``dest``; DataError (nothing written) if it fails.

    A frame folder (``source`` is a folder) is read whole: its ``listed`` frames (the count a rawframe
    list gives) or, without one, its frames up to the first number with no file; a frame missing before
    that count, or a gap with later frames after it, fails the folder before anything is decoded
    (:func:`stnet.formats.count_frame_folder`), with or without ``keep_partial``.

    The clip records the source's :class:`~stnet.clipstore.SourceStamp`, its rate and frame count; at a
    reduced rate (``settings.fps``/``max_frames``) only the source frames nearest to the stored rate's
    times are kept (:func:`stnet.sampling.source_index`). Returns ``{"frames", "width", "height", "fps",
    "source_fps", "source_frames", "bytes", "source_bytes"}`` and maybe a ``"warning"``: when
    ``keep_partial`` kept the frames decoded before an error, or when fewer frames decoded than the
    header announces (a truncated AVI decodes cleanly up to its cut; headers also lie, so this is only
    reported). An error writing ``dest`` is an :class:`~stnet.errors.OSFailure`.
    """
    folder = os.path.isdir(source)  # a frame folder (rawframe lists), not a video file
    fps, announced = (settings.frames_fps, 0) if folder else _probe(str(source))
    try:
        stamp = _folder_stamp(source) if folder else clipstore.SourceStamp.of(source)
    except OSError as e:
        raise DataError(f"cannot read: {os_error_line(e)}") from None
    count = formats.count_frame_folder(source, settings.filename_tmpl, listed) if folder else None
    rate = _stored_rate(source, fps, settings, count) if fps > 0 else fps
    resample = 0 < rate < fps
    decoded = 0
    wanted = 0  # the next source frame to store
    cap = settings.max_frames
    capped = False  # frames past --max-frames were dropped (the packets undercounted, or no rate)

    def keep(index: int) -> bool:
        nonlocal decoded, wanted, capped
        decoded = index + 1
        if index < wanted:
            return False
        if cap is not None and writer.num_frames >= cap:
            capped = True
            return False
        if resample:
            wanted = source_index(writer.num_frames + 1, rate, fps)
        return True

    frames = (
        formats.iter_frame_folder(source, settings.filename_tmpl, count, keep)
        if count is not None
        else iter_frames(source, keep)
    )
    warning = None
    with clipstore.ClipWriter(dest, rate, source=stamp) as writer:
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
        writer.source_fps, writer.source_frames = fps, decoded
        width, height = writer.size or (0, 0)
        result: dict[str, Any] = {
            "frames": writer.num_frames,
            "width": width,
            "height": height,
            "fps": rate,
            "source_fps": fps,
            "source_frames": decoded,
            "source_bytes": _source_bytes(source, settings.filename_tmpl, decoded) if folder else stamp.size,
        }  # before the writer closes: a folder that cannot be read leaves no clip
    result["bytes"] = os.path.getsize(dest)
    if warning is None and announced > decoded:
        warning = f"decoded {decoded} frames, the header announces {announced} (truncated file?)"
    if warning is None and capped:
        warning = (
            f"--max-frames {cap}: frames past the first {cap} stored were dropped (of {decoded} decoded)"
        )
    if warning:
        result["warning"] = warning
    return result


_FOLDER_DIGEST = hashlib.sha256(b"stnet frame folder").digest()


def _source_bytes(folder: str | os.PathLike, template: str, frames: int) -> int:
    """The bytes of a frame folder's first ``frames`` frame files (the frames its clip came from)."""
    try:
        return formats.frame_folder_bytes(folder, template, frames)
    except OSError as e:
        raise DataError(f"cannot read: {os_error_line(e)}") from None


def _folder_stamp(folder: str | os.PathLike) -> clipstore.SourceStamp:
    """A frame folder's stamp: its size and mtime (a frame added or removed changes the mtime; the
    digest only marks the stamp known, as an all-zero one means unknown)."""
    st = os.stat(folder)
    return clipstore.SourceStamp(st.st_size, st.st_mtime_ns, _FOLDER_DIGEST)


Result = tuple[str, Any]  # ("ok", info) | ("failed", reason) | ("fatal", one-line OS error writing OUT)


class Task(NamedTuple):
    """One conversion: a source, its clip, and a frame folder's listed frame count (else None)."""

    source: str
    dest: str
    frames: int | None = None


def _work(task: Task, settings: Settings) -> Result:
    """Worker entry: never raises; a bad video is ``failed``, an error writing the clip ``fatal``."""
    try:
        return "ok", convert_video(task.source, task.dest, settings, task.frames)
    except OSFailure as e:  # the output, not the video: a full disk or a read-only folder stops the run
        return "fatal", str(e)
    except DataError as e:
        return "failed", str(e)
    except MemoryError:
        return "failed", "out of memory while decoding"
    except Exception as e:  # a bad input must never stop the run
        return "failed", f"unexpected error: {type(e).__name__}: {e}"


_PR_SET_PDEATHSIG = 1


def worker_init(parent: int) -> None:
    """In each worker process (prepare's decoding, data check's probing): die with the parent, and leave
    Ctrl-C and SIGTERM to it.

    Linux delivers SIGKILL when the parent exits, however it dies (``prctl(PR_SET_PDEATHSIG)``);
    elsewhere, and against the parent dying before the call, a thread checks the parent every second.
    Workers ignore SIGINT: the parent stops them (and removes their temporary files) itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # re-parented: the parent is gone
            os._exit(1)


# ----------------------------------------------------------------------------------------------------
# Front ends: building the plan
# ----------------------------------------------------------------------------------------------------


def _escape_char(c: str) -> str:
    """``c`` as it appears in a clip name: itself, or ``%XX`` per byte if a list line cannot hold it."""
    if c == "%" or (c.isspace() and c != " ") or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp"):
        return "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return c


def clip_output(rel: PurePosixPath) -> str:
    """The clip (relative to OUT) of the video at ``rel`` (relative to the video root).

    It is the video's path *with* its extension plus ``.stclip`` (``a/x.mp4`` → ``clips/a/x.mp4.stclip``,
    ``a/x.avi`` → ``clips/a/x.avi.stclip``), so two sources never share a clip. Line breaks, tabs,
    control characters, bytes that are not UTF-8 and ``%`` itself are written ``%XX``: the name stays
    unique (the escape is reversible) and every list line reads back.
    """
    name = rel.as_posix()
    if not (name.isascii() and name.isprintable() and "%" not in name):  # else nothing to escape
        name = "".join(map(_escape_char, name))
    return f"{CLIPS}/{name}{clipstore.SUFFIX}"


def index_videos(source: Path) -> list[Path]:
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


def _posix(path: Path) -> PurePosixPath:
    return PurePosixPath(path.as_posix())


def plan_ucf101(
    source: Path, annotations: str | None, split: int, random_split: float | None, seed: int
) -> Plan:
    """UCF101 with the official split ``split`` (1–3), or a random split by actor group on request."""
    videos = index_videos(source)
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
    for number, line in read_lines(folder / "classInd.txt", "UCF101 class file"):
        index, _, name = line.partition(" ")
        if not index.isdigit() or int(index) != len(classes) + 1 or not name.strip():
            raise DataError(
                f"{folder / 'classInd.txt'}:{number}: expected '<1-based index> <class name>' lines, "
                f"got {line!r}"
            )
        classes.append(name.strip())
    label_of = {name.lower(): i for i, name in enumerate(classes)}
    by_path = {str(v).replace(os.sep, "/").lower(): v for v in videos}
    by_name: dict[str, list[Path]] = {}
    for v in videos:
        by_name.setdefault(v.name.lower(), []).append(v)
    lists = (("train", folder / f"trainlist0{split}.txt"), ("val", folder / f"testlist0{split}.txt"))
    plan = Plan("ucf101", classes, split={"kind": "official", "split": split, "annotations": str(folder)})
    plan.inputs = [str(source), str(folder / "classInd.txt"), *(str(path) for _, path in lists)]
    for split_name, list_path in lists:
        for number, line in read_lines(list_path, "UCF101 split file"):
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
            plan.add(split_name, source, _posix(found), label, f"{list_path}:{number}")
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
        inputs=[str(source)],
    )
    label_of = {name: i for i, name in enumerate(classes)}
    for v in in_class:
        split = "train" if group(v) in train_groups else "val"
        plan.add(split, source, _posix(v), label_of[v.parts[0]], str(source / v.parent))
    return plan


def _csv_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], str | None]:
    """``(line number, row)`` of a Kinetics CSV, and the split its file name suggests (if no column)."""
    reader = csv.reader(io.StringIO(read_text(path, "CSV file"), newline=""))
    rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    columns = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    if rows and "youtube_id" in (c.strip().lower() for c in rows[0][1]):
        columns = [c.strip().lower() for c in rows[0][1]]
        rows = rows[1:]
    missing = {"youtube_id", "time_start", "time_end"} - set(columns)  # the test CSV has no label
    if missing:
        raise DataError(
            f"{path}: the header lacks {', '.join(sorted(missing))} "
            "(expected label,youtube_id,time_start,time_end,split)"
        )
    stem = path.stem.lower()
    guess = next((s for key, s in _SPLIT_NAMES.items() if key in stem), None)
    return [(n, dict(zip(columns, (c.strip() for c in r), strict=False))) for n, r in rows], guess


def plan_kinetics(csvs: Sequence[str], source: Path, label_file: str | None) -> Plan:
    """Kinetics CSVs → jobs; labels from the train rows (the reference's generate_label) or ``label_file``.

    Test rows with a label become the ``test`` split; the official test CSV has none, and its rows are
    counted as ``test_rows_without_labels`` (and said so).
    """
    table: list[tuple[str, dict[str, str], str]] = []  # split, row, "file:line"
    for name in csvs:
        rows, guess = _csv_rows(Path(name))
        for number, row in rows:
            split = _SPLIT_NAMES.get(row.get("split", "").lower()) or guess
            if split is None:
                raise DataError(
                    f"{name}: rows have no split column and the file name does not say train/val/test"
                )
            table.append((split, row, f"{name}:{number}"))
    if label_file:
        classes = read_classes(label_file)
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
    for v in index_videos(source):
        index.setdefault(v.stem, v)
    plan = Plan(
        "kinetics",
        classes,
        split={
            "kind": "csv",
            "csv": [str(c) for c in csvs],
            "label_file": label_file or "from the train CSV",
        },
        inputs=[*map(str, csvs), *([label_file] if label_file else []), str(source)],
    )
    seen: set[tuple[str, str]] = set()
    unlabelled = 0
    for split, row, where in table:
        if split == "test" and not row.get("label", "").strip('"'):
            unlabelled += 1
            continue
        try:
            stem = (
                f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            )
        except ValueError:
            plan.failures.append(
                {
                    "split": split,
                    "source": ",".join(row.values()),
                    "reason": f"{where}: bad time_start/time_end",
                }
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
                    "reason": f"{where}: label {row.get('label', '')!r} is not in the train label map",
                }
            )
            continue
        found = index.get(stem) or index.get(row["youtube_id"])
        if found is None:
            plan.missing.append({"split": split, "entry": stem})
            continue
        plan.add(split, source, _posix(found), label, where)
    plan.notes["test_rows_without_labels"] = unlabelled
    if unlabelled:
        plan.warnings.append(
            f"{unlabelled} test rows have no label (the official test CSV): not prepared; a test CSV with "
            "labels becomes the test split (test.txt)"
        )
    return plan


def plan_hmdb51(source: Path, splits: Path, split: int) -> Plan:
    """HMDB51 with the official split ``split`` (1-3): ``splits/<class>_test_split<split>.txt`` lines
    ``name.avi 0|1|2`` (1 train, 2 test → ``val``, 0 unused) and videos ``source/<class>/name.avi``.

    Classes are the split files' class names, sorted (they spell the official video folders). Entries
    marked 0 are counted and listed as ``unused`` in the report; listed videos not on disk are missing.
    """
    if not source.is_dir():
        raise DataError(f"source folder not found: {source}")
    classes, entries, unused = formats.read_hmdb51_splits(splits, split)
    plan = Plan(
        "hmdb51",
        classes,
        split={"kind": "official", "split": split, "splits": str(splits), "test_split_is": "val"},
        notes={"unused": len(unused), "unused_videos": unused},
        inputs=[str(splits), str(source)],
    )
    if len(classes) != formats.HMDB51_CLASSES:
        plan.warnings.append(
            f"{splits} holds split files of {len(classes)} classes; the official HMDB51 has "
            f"{formats.HMDB51_CLASSES}"
        )
    label_of = {name: i for i, name in enumerate(classes)}
    for e in entries:
        rel = PurePosixPath(e.rel)
        if not (source / rel).is_file():
            plan.missing.append({"split": e.split, "entry": e.rel})
            continue
        plan.add(e.split, source, rel, label_of[e.label], e.where)
    return plan


def _video_stems(source: Path) -> dict[str, str]:
    """The video files directly in ``source`` by stem (``12345`` → ``12345.webm``; .webm preferred)."""
    if not source.is_dir():
        raise DataError(f"source folder not found: {source}")
    found: dict[str, str] = {}
    with os.scandir(source) as it:
        for item in it:
            if is_video_file(item.name):
                stem = os.path.splitext(item.name)[0]
                if stem not in found or item.name.lower().endswith(".webm"):
                    found[stem] = item.name
    return found


def plan_ssv2(source: Path, labels: str, train: str | None, val: str | None) -> Plan:
    """Something-Something V2: each entry's class is its ``template`` with the square brackets dropped,
    looked up in the labels JSON; its video is ``source/<id>.webm`` (another video suffix is taken
    when the videos were transcoded)."""
    files = {split: path for split, path in (("train", train), ("val", val)) if path}
    if not files:
        raise DataError("give --train and/or --val (something-something-v2-train.json, -validation.json)")
    classes, entries, refused = formats.read_ssv2(labels, files)
    videos = _video_stems(source)
    plan = Plan(
        "ssv2",
        classes,
        split={"kind": "official", "labels": labels, **{f"{s}_json": p for s, p in files.items()}},
        failures=refused,
        inputs=[labels, *files.values(), str(source)],
    )
    for e in entries:
        name = videos.get(e.rel)
        if name is None:
            plan.missing.append({"split": e.split, "entry": f"{e.rel}.webm"})
            continue
        plan.add(e.split, source, PurePosixPath(name), int(e.label), e.where)
    return plan


def _parse_list_arg(value: str) -> tuple[str, Path]:
    split, eq, file = value.partition("=")
    if eq and _SPLIT_NAMES.get(split.lower()) in LIST_SPLITS:
        return _SPLIT_NAMES[split.lower()], Path(file)
    path = Path(value)
    stem = path.stem.lower()
    for key, name in _SPLIT_NAMES.items():
        if key in stem and name in LIST_SPLITS:
            return name, path
    if "test" in stem:
        return "val", path
    return "train", path


def plan_list(
    lists: Sequence[str],
    root: Path,
    folders: bool,
    label_file: str | None,
    list_format: str = "auto",
    filename_tmpl: str = formats.FRAME_TEMPLATE,
) -> Plan:
    """Annotation lists in ``list_format`` (:data:`stnet.formats.LIST_FORMATS`; labels: integers or
    class names, one kind per file), or with ``folders`` a class tree (labels: the folder names).

    A rawframe entry is a folder of frames named ``filename_tmpl``: it is missing unless it is a folder,
    and refused when its first or its last listed frame is not there; a frame missing in between fails
    its conversion (:func:`convert_video` reads every listed frame)."""
    entries: list[formats.ListEntry] = []
    kinds: dict[str, str] = {}  # source of labels -> "integer" | "name"
    used: dict[str, str] = {}  # list file -> its format
    warnings: list[str] = []
    if folders:
        if not root.is_dir():
            raise DataError(f"root folder not found: {root}")
        split_roots = [(s, root / s) for s in LIST_SPLITS if (root / s).is_dir()] or [("train", root)]
        for split, base in split_roots:
            for v in index_videos(base):
                if len(v.parts) == 2:
                    rel = (base / v).relative_to(root)
                    entries.append(
                        formats.ListEntry(split, rel.as_posix(), v.parts[0], str(base / v.parts[0]))
                    )
        kinds[f"the folders of {root}"] = "name"
    for value in lists:
        split, path = _parse_list_arg(value)
        found, kind, used[str(path)] = formats.read_list(split, path, list_format, root)
        if kind is None:
            warnings.append(f"{path} lists no video")
        else:
            kinds[str(path)] = kind
        entries += found
    if not entries:
        raise DataError("nothing to prepare: give --list FILE (relative/path label lines) or --folders")
    if len(set(kinds.values())) > 1:
        integer = next(k for k, v in kinds.items() if v == "integer")
        name = next(k for k, v in kinds.items() if v == "name")
        raise DataError(f"{integer} has integer labels, {name} class names: use one kind in every list")
    numeric = set(kinds.values()) == {"integer"}
    if label_file:
        classes = read_classes(label_file)
    elif numeric:
        top = max(int(e.label) for e in entries)
        classes = _class_names(entries, top + 1)
    else:
        classes = sorted({e.label for e in entries if e.split == "train"} or {e.label for e in entries})
    label_of = {name: i for i, name in enumerate(classes)}
    split_info: dict[str, Any] = {
        "kind": "folders" if folders else "lists",
        "lists": list(lists),
        "root": str(root),
    }
    if used:
        split_info["formats"] = used
    plan = Plan(
        "list",
        classes,
        split=split_info,
        inputs=[
            *(str(_parse_list_arg(v)[1]) for v in lists),
            *([label_file] if label_file else []),
            str(root),
        ],
        warnings=warnings,
    )
    for e in entries:
        label = int(e.label) if numeric else label_of.get(e.label)
        if label is None or label >= len(classes):
            plan.failures.append(
                {"split": e.split, "source": e.rel, "reason": f"{e.where}: unknown class {e.label!r}"}
            )
            continue
        rel = PurePosixPath(e.rel)
        if rel.is_absolute() or ".." in rel.parts:
            plan.failures.append(
                {
                    "split": e.split,
                    "source": e.rel,
                    "reason": f"{e.where}: the path must be relative to --root",
                }
            )
            continue
        path = os.path.join(root, rel)  # os.path: pathlib's joins dominate planning 240k entries
        if not (os.path.isdir(path) if e.frames is not None else os.path.exists(path)):
            plan.missing.append({"split": e.split, "entry": e.rel})
            continue
        gone = None if e.frames is None else _missing_frame(root / rel, filename_tmpl, e.frames)
        if gone:
            plan.failures.append(
                {"split": e.split, "source": str(root / rel), "reason": f"{e.where}: {gone}"}
            )
            continue
        plan.add(e.split, root, rel, label, e.where, e.frames)
    return plan


def _missing_frame(folder: Path, template: str, frames: int) -> str | None:
    """Why a frame folder listed with ``frames`` frames cannot be prepared: no frame listed, or its first
    or last listed frame is not there (None: it can)."""
    if frames < 1:
        return "lists 0 frames"
    for index in (0, frames - 1):
        if not (folder / formats.frame_name(template, index)).is_file():
            return f"{formats.missing_frame(template, index, frames)} (see --filename-tmpl)"
    return None


def _class_names(entries: list[formats.ListEntry], count: int) -> list[str]:
    """Names for integer labels 0..count-1: the one parent folder the videos of a label share, else
    ``class<index>`` (one pass over the entries: Kinetics-400 has 400 labels and 240k entries)."""
    parents: dict[int, set[str]] = {}
    for e in entries:
        parents.setdefault(int(e.label), set()).add(PurePosixPath(e.rel).parent.name)
    names = []
    for index in range(count):
        found = parents.get(index, set())
        name = next(iter(found)) if len(found) == 1 else ""
        if name:
            with contextlib.suppress(DataError):
                check_class_name(name, "a folder name")
                names.append(name)
                continue
        names.append(f"class{index}")
    return names


# ----------------------------------------------------------------------------------------------------
# The back end: executing a plan
# ----------------------------------------------------------------------------------------------------


_LEFTOVER = re.compile(r"^\.(.+\.stclip)\.[A-Za-z0-9_]+\.tmp$")  # fileio.atomic_path's temp name
SHARDS = "shards"  # OUT/shards/<i>-of-<N>/: each shard's lists, classes and report
_SHARD_NAME = re.compile(r"^(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class _Target:
    """Where a run writes: clips under ``root`` (the report's ``files`` are relative to it); lists,
    ``classes.txt`` and the report in ``meta`` (``root`` itself, or a shard's folder). A shard touches
    only the temporary files of its own clips (``own``): the other shards may be writing theirs."""

    root: Path
    meta: Path
    own: frozenset[str] | None = None

    def rel(self, name: str) -> str:
        """``name`` in ``meta``, relative to ``root``."""
        return (self.meta / name).relative_to(self.root).as_posix()


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of a video: a stable hash of its path relative to its source folder (the
    same on every machine, whatever the mount point, in every Python process)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_folder(out: Path, shard: tuple[int, int]) -> Path:
    return out / SHARDS / f"{shard[0]}-of-{shard[1]}"


def _remove_leftovers(clips: Path, own: frozenset[str] | None = None) -> int:
    """Delete temporary files a killed run left behind (``.<name>.stclip.<random>.tmp``); with ``own``
    (clip paths relative to the folder above ``clips``) only those of these clips."""
    removed = 0
    if not clips.is_dir():
        return 0
    for folder, _, files in os.walk(clips):
        for name in files:
            m = _LEFTOVER.match(name)
            if m and (own is None or Path(folder, m.group(1)).relative_to(clips.parent).as_posix() in own):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _check_settings(out: Path, previous: dict[str, Any] | None, settings: Settings) -> None:
    defaults = asdict(Settings(settings.short_side))  # keys an older report lacks had these values
    try:
        given = previous["settings"]  # type: ignore[index]
        before = Settings(**{k: given[k] if k in given else defaults[k] for k in asdict(settings)})
    except (KeyError, TypeError):
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


def _previous_report(out: Path, path: Path | None = None) -> dict[str, Any] | None:
    """The report an earlier run left in ``out`` (or at ``path``; None: none); an error if it is not
    stnet's own."""
    path = path or out / REPORT
    if not path.exists() and not path.is_symlink():
        return None
    try:
        report = json.loads(read_text(path))
    except (StnetError, ValueError):
        report = None
    if not isinstance(report, dict) or "command" not in report or "settings" not in report:
        raise UserError(
            f"{path} exists and is not a report stnet prepare wrote; nothing was written: move it away "
            "or choose another --out folder"
        )
    if not isinstance(report.get("files"), list):
        raise UserError(
            f"{out} was prepared by an older stnet (clip names without the video's extension, and no "
            f"list of its files); nothing was written: prepare into a new --out folder, or delete {out} "
            "and rerun to convert again"
        )
    return report


def _check_outputs(out: Path, planned: Sequence[str], report: Path | None = None) -> dict[str, Any] | None:
    """Refuse to replace a file in ``out`` that no earlier prepare run listed as its own: in ``report``
    (``out/prepare_report.json``, or a shard's) or in any other report in ``out`` (the whole run's, every
    shard's: a folder prepared with 2 shards can be prepared again with 4, or unsharded).

    Returns the earlier run's report at ``report`` (None: there is none). Nothing is written here.
    """
    report = report or out / REPORT
    previous = _previous_report(out, report)
    ours = set(previous["files"]) if previous else set()
    for other in [out / REPORT, *sorted((out / SHARDS).glob(f"*/{REPORT}"))]:
        if other != report and other.is_file():
            with contextlib.suppress(StnetError):  # a damaged report vouches for nothing
                ours.update((_previous_report(out, other) or {}).get("files", []))
    for rel in planned:
        path = out / rel
        if rel not in ours and (path.exists() or path.is_symlink()):
            raise UserError(
                f"{path} exists and stnet prepare did not write it (it is not among the files of "
                f"{report}); nothing was written: move it away or choose another --out folder"
            )
    return previous


def _report_bytes(report: dict[str, Any]) -> bytes:
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:  # a path with bytes that are not UTF-8: escape them as JSON does
        return (json.dumps(report, indent=2) + "\n").encode()


def _write_report(out: Path, report: dict[str, Any]) -> None:
    atomic_write_bytes(out / REPORT, _report_bytes(report))


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (they hold no state worth waiting for) and drop queued work."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=5)


def _run_jobs(
    todo: list[Task], settings: Settings, workers: int, progress: bool, total: int = 0
) -> tuple[dict[str, Result], str | None]:
    """Convert ``todo``: results by dest, and the first fatal error (then the rest stop).

    After the first :data:`PROJECT_AFTER` conversions the projected size of the store of ``total``
    videos (default: the pairs) is printed to stderr.

    A worker crash fails only the videos in flight. Ctrl-C (or SIGTERM, see :func:`_sigterm_as_ctrl_c`)
    kills the workers and raises KeyboardInterrupt.
    """
    from tqdm import tqdm

    results: dict[str, Result] = {}
    fatal: str | None = None
    bar = tqdm(total=len(todo), unit="video", desc="prepare", disable=not progress, dynamic_ncols=True)
    projection = _Projection(total or len(todo), lambda line: bar.write(line, file=sys.stderr))
    try:
        if workers <= 1:
            for task in todo:
                results[task.dest] = _work(task, settings)
                projection.add(results[task.dest])
                bar.update()
                if results[task.dest][0] == "fatal":
                    return results, str(results[task.dest][1])
            return results, None
        queue = list(reversed(todo))
        # fork: workers inherit the imported modules (importing stnet, and so torch, costs ~1 s per process)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        while queue:
            pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=worker_init, initargs=(os.getpid(),)
            )
            running: dict[cf.Future, str] = {}  # -> dest
            try:
                while queue or running:
                    while queue and len(running) < 4 * workers:
                        task = queue.pop()
                        running[pool.submit(_work, task, settings)] = task.dest
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        dest = running.pop(future)
                        results[dest] = future.result()
                        projection.add(results[dest])
                        bar.update()
                        if results[dest][0] == "fatal" and fatal is None:
                            fatal = str(results[dest][1])
                            queue.clear()  # finish what is running, start nothing more
                pool.shutdown(wait=True)
            except cf.process.BrokenProcessPool:
                for dest in running.values():
                    if dest not in results:
                        results[dest] = (
                            "failed",
                            "a worker process crashed while decoding (this file or one "
                            "decoded at the same time)",
                        )
                        bar.update()
                pool.shutdown(wait=True)
            except BaseException:
                _stop_workers(pool)
                raise
    finally:
        bar.close()
    return results, fatal


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """While this holds (in the main thread), SIGTERM stops the run exactly as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _unique_jobs(plan: Plan) -> tuple[list[Job], list[str]]:
    """The jobs with each (split, video) once; a video listed with two labels is a DataError."""
    first_of: dict[str, Job] = {}
    kept: list[Job] = []
    listed: set[tuple[str, str]] = set()  # (split, output) of the kept jobs
    warnings: list[str] = []
    for job in plan.jobs:
        first = first_of.setdefault(job.output, job)
        if first is job:
            kept.append(job)
            listed.add((job.split, job.output))
            continue
        if first.label != job.label:
            raise DataError(
                f"{job.where}: {job.source} is listed again with label {job.label} "
                f"({plan.classes[job.label]}); {first.where} gives it {first.label} "
                f"({plan.classes[first.label]}): one video, one label"
            )
        if first.split == job.split:
            warnings.append(f"{job.where}: {job.source} is listed twice (also {first.where}); kept once")
        elif (job.split, job.output) not in listed:
            warnings.append(f"{job.where}: {job.source} is in both {first.split} and {job.split}")
            kept.append(job)
            listed.add((job.split, job.output))
    return kept, warnings


def _video_folders(jobs: Sequence[Job]) -> list[str]:
    """One video per folder holding videos: ``OUT`` must not be such a folder (or above one)."""
    by_folder: dict[str, str] = {}
    for job in jobs:
        by_folder.setdefault(os.path.dirname(job.source), job.source)
    return list(by_folder.values())


def execute(
    plan: Plan,
    out: str | os.PathLike,
    settings: Settings,
    *,
    workers: int = 1,
    strict: bool = False,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Prepare every job of ``plan`` into ``out``, write lists, classes and report; return the report.

    With ``shard`` ``(i, N)`` only the videos of shard ``i`` (:func:`shard_of`) are converted, into
    ``out/clips`` as always, and the shard's lists, classes and report go to ``out/shards/<i>-of-<N>``
    (with ``positions.json``: where each list line stands in the whole plan) for :func:`merge`. Entries
    that are never converted (missing, refused while planning) are reported by shard 0.

    Raises :class:`~stnet.errors.StnetError` subclasses: UserError when ``out`` is or holds an input or a
    file prepare did not write, DataError for contradicting labels or unwritable class names,
    PrepareError when a split ends up empty (or, with ``strict``, anything failed or was missing) and
    when writing ``out`` fails (then the report says incomplete, and a rerun finishes the work).
    """
    started = time.monotonic()
    out = Path(out)
    refuse_overwriting_inputs([out], [*plan.inputs, *_video_folders(plan.jobs)])
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    for i, name in enumerate(plan.classes):
        check_class_name(name, f"class {i}")
    jobs, duplicates = _unique_jobs(plan)
    asked = {j.split for j in jobs} | {m["split"] for m in plan.missing} | {f["split"] for f in plan.failures}
    splits = [s for s in SPLITS if s in LIST_SPLITS or s in asked]  # of the whole plan: every shard's
    positions: list[int] = []
    target = _Target(out, out)
    if shard is not None:
        plan, jobs, positions = _shard_part(plan, jobs, shard)
        target = _Target(out, shard_folder(out, shard), frozenset(j.output for j in jobs))
    outputs = sorted({j.output for j in jobs})
    written = [target.rel(n) for n in ("classes.txt", REPORT, *(f"{s}.txt" for s in splits))]
    if shard is not None:
        written.append(target.rel(POSITIONS))
    report_path = target.meta / REPORT
    _check_outputs(
        out, [*written, *outputs], report_path
    )  # before the lock: a refused folder is left as it was
    with folder_lock(target.meta, "prepare"), _sigterm_as_ctrl_c():
        previous = _check_outputs(out, [*written, *outputs], report_path)
        _check_settings(out, previous, settings)
        files = {f for f in (previous or {}).get("files", []) if (out / f).exists()}
        if target.rel("test.txt") in files and "test" not in splits:
            splits.append("test")  # an earlier run's test list: rewrite it (empty) rather than keep it stale
        report: dict[str, Any] = {
            "complete": False,
            "command": plan.command,
            "options": options or {},
            "settings": asdict(settings),
            "split": plan.split,
            **plan.notes,
            "files": sorted(files | set(written) | set(outputs)),
        }
        if shard is not None:
            report["shard"] = {"index": shard[0], "count": shard[1]}
        _write_report(target.meta, report)
        notes = [*plan.warnings, *duplicates]
        for note in notes:
            print(f"stnet: warning: {note}", file=sys.stderr)
        report["leftovers_removed"] = _remove_leftovers(out / CLIPS, target.own)
        clip_info, todo = _reusable(out, jobs, report, settings.filename_tmpl)
        results = _convert(target, todo, settings, workers, progress, report, len(clip_info) + len(todo))
        failures = list(plan.failures)
        warnings_: list[dict[str, str]] = [{"source": "", "warning": note} for note in notes]
        reasons: dict[str, str] = {}
        for task in todo:
            status, value = results[task.dest]
            output = Path(task.dest).relative_to(out).as_posix()
            if status == "ok":
                clip_info[output] = value
                if "warning" in value:
                    warnings_.append({"source": task.source, "warning": value["warning"]})
            else:
                reasons[output] = str(value)
        lines, counts = _split_lists(plan, jobs, splits, clip_info, reasons, failures)
        elapsed = time.monotonic() - started
        report.update(
            {
                "complete": True,
                "classes": len(plan.classes),
                "counts": counts,
                "failures": failures,
                "missing": plan.missing,
                "warnings": warnings_,
                "bytes": _byte_counts(clip_info),
                "elapsed_s": round(elapsed, 3),
                "videos_per_s": round(len(todo) / elapsed, 2) if elapsed > 0 else None,
            }
        )
        extra = {}
        if shard is not None:
            report["shard"]["videos"] = len(clip_info)
            order = {
                split: [
                    p
                    for p, j in zip(positions, jobs, strict=True)
                    if j.split == split and j.output in clip_info
                ]
                for split in splits
            }
            extra[POSITIONS] = json.dumps(order, separators=(",", ":")).encode() + b"\n"
        _write_lists(target, lines, plan.classes, report, extra)
    converted = len(todo) - len(reasons)
    print(
        f"{target.meta}: {converted} videos converted, {len(clip_info) - converted} reused, "
        f"{len(reasons)} failed in {elapsed:.1f} s; {_bytes_line(report['bytes'])}",
        file=sys.stderr,
    )
    _check_counts(target.meta, counts, failures, plan.missing, strict, whole=shard is None)
    return report


def _shard_part(plan: Plan, jobs: list[Job], shard: tuple[int, int]) -> tuple[Plan, list[Job], list[int]]:
    """Shard ``shard``'s part of ``plan``: its jobs, their positions in ``jobs``, and (shard 0 only) the
    entries that are never converted."""
    index, count = shard
    kept = [(k, j) for k, j in enumerate(jobs) if shard_of(j.output, count) == index]
    first = index == 0
    part = replace(
        plan,
        jobs=[j for _, j in kept],
        missing=plan.missing if first else [],
        failures=plan.failures if first else [],
    )
    return part, part.jobs, [k for k, _ in kept]


def _reusable(
    out: Path, jobs: list[Job], report: dict[str, Any], template: str = formats.FRAME_TEMPLATE
) -> tuple[dict[str, dict[str, Any]], list[Task]]:
    """The clips a rerun keeps (complete, from an unchanged source) by output, and the conversions still
    to run (a video listed twice is converted once). ``template`` names the frame files of frame-folder
    sources (their bytes are summed again)."""
    first: dict[str, Job] = {}
    for job in jobs:
        first.setdefault(job.output, job)
    clip_info: dict[str, dict[str, Any]] = {}
    todo: list[Task] = []
    changed = 0
    for output, job in first.items():
        dest = out / output
        if clipstore.is_complete(dest):
            info = clipstore.read_info(dest)
            source_bytes = _reused_source_bytes(job, info, template)
            if source_bytes is not None:
                clip_info[output] = {
                    "frames": info.num_frames,
                    "width": info.width,
                    "height": info.height,
                    "bytes": info.size,
                    "source_bytes": source_bytes,
                    "reused": True,
                }
                continue
            changed += 1  # the source changed since (or is not known): convert it again
        todo.append(Task(job.source, str(dest), job.frames))
    report["sources_changed"] = changed
    return clip_info, todo


def _reused_source_bytes(job: Job, info: clipstore.ClipInfo, template: str) -> int | None:
    """The bytes of the source a complete clip came from, if ``job``'s source is still that source (None:
    it changed, is not known, a frame folder is now listed with another frame count, or a frame of the
    folder cannot be read: convert it again)."""
    source = job.source
    if info.source is None or not info.source.matches(source):
        return None
    if not os.path.isdir(source):
        return info.source.size
    if job.frames is not None and job.frames != info.source_frames:
        return None
    try:
        return formats.frame_folder_bytes(source, template, info.source_frames)
    except OSError:
        return None


def _byte_counts(clip_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's disk budget: bytes of the prepared videos' sources and clips, and per video."""
    source = sum(int(c["source_bytes"]) for c in clip_info.values())
    store = sum(int(c["bytes"]) for c in clip_info.values())
    videos = len(clip_info)
    return {
        "source": source,
        "store": store,
        "per_video": round(store / videos) if videos else 0,
        "store_to_source": round(store / source, 4) if source else None,
    }


def _bytes_line(counts: dict[str, Any]) -> str:
    return (
        f"store {human_bytes(counts['store'])} ({human_bytes(counts['per_video'])} per video), "
        f"sources {human_bytes(counts['source'])}"
    )


PROJECT_AFTER = 100  # converted videos after which the projected store size is printed


class _Projection:
    """Prints, once ``PROJECT_AFTER`` videos are converted, their mean clip size times the run's videos."""

    def __init__(self, total: int, write: Callable[[str], None]) -> None:
        self.total = total
        self.write = write
        self.store: list[int] = []
        self.source: list[int] = []

    def add(self, result: Result) -> None:
        status, info = result
        if status != "ok" or len(self.store) >= PROJECT_AFTER:
            return
        self.store.append(int(info["bytes"]))
        self.source.append(int(info["source_bytes"]))
        if len(self.store) == PROJECT_AFTER and self.total > PROJECT_AFTER:
            per_video = sum(self.store) / len(self.store)
            ratio = sum(self.store) / max(1, sum(self.source))
            self.write(
                f"prepare: the first {PROJECT_AFTER} videos take {human_bytes(per_video)} each "
                f"({ratio:.2f}x their sources); projected store for {self.total} videos: "
                f"{human_bytes(per_video * self.total)}"
            )


def _convert(
    target: _Target,
    todo: list[Task],
    settings: Settings,
    workers: int,
    progress: bool,
    report: dict[str, Any],
    total: int = 0,
) -> dict[str, Result]:
    """Run the conversions; on Ctrl-C/SIGTERM or an error writing OUT: clean up, mark the report."""
    try:
        results, fatal = _run_jobs(todo, settings, workers, progress, total)
    except KeyboardInterrupt as e:
        _stop_incomplete(target, report, f"interrupted ({str(e) or 'Ctrl-C'})")
        raise
    if fatal is not None:
        _stop_incomplete(target, report, fatal)
        raise PrepareError(f"{fatal}; {target.meta} is incomplete: rerun the same command when this is fixed")
    return results


def _split_lists(
    plan: Plan,
    jobs: list[Job],
    splits: list[str],
    clip_info: dict[str, dict[str, Any]],
    reasons: dict[str, str],
    failures: list[dict[str, str]],
) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """The lines of each split's list and its counts; failed conversions are added to ``failures``."""
    lines: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        split_jobs = [j for j in jobs if j.split == split]
        ok = [j for j in split_jobs if j.output in clip_info]
        for job in split_jobs:
            if job.output in reasons:
                failures.append({"split": split, "source": job.source, "reason": reasons[job.output]})
        lines[split] = [f"{j.output} {j.label}" for j in ok]
        counts[split] = {
            "listed": len(split_jobs)
            + sum(m["split"] == split for m in plan.missing)
            + sum(f["split"] == split for f in plan.failures),
            "found": len(split_jobs),
            "prepared": len(ok),
            "reused": sum(1 for j in ok if clip_info[j.output].get("reused")),
            "failed": sum(f["split"] == split for f in failures),
            "missing": sum(m["split"] == split for m in plan.missing),
            "frames": sum(clip_info[j.output]["frames"] for j in ok),
        }
    return lines, counts


def _write_lists(
    target: _Target,
    lines: dict[str, list[str]],
    classes: list[str],
    report: dict[str, Any],
    extra: dict[str, bytes] | None = None,
) -> None:
    """Write the split lists, ``classes.txt``, the ``extra`` files and the (complete) report into
    ``target.meta``; an OS error leaves the report saying incomplete."""
    out = target.meta
    try:
        for split, split_lines in lines.items():
            atomic_write_bytes(out / f"{split}.txt", "".join(f"{line}\n" for line in split_lines).encode())
        atomic_write_bytes(
            out / "classes.txt", "".join(f"{name} {i}\n" for i, name in enumerate(classes)).encode()
        )
        for name, data in (extra or {}).items():
            atomic_write_bytes(out / name, data)
        _write_report(out, report)
    except OSFailure as e:
        _stop_incomplete(target, report, str(e))
        raise PrepareError(f"{e}; {out} is incomplete: rerun the same command when this is fixed") from None


def _check_counts(
    out: Path,
    counts: dict[str, dict[str, int]],
    failures: list[dict[str, str]],
    missing: list[dict[str, str]],
    strict: bool,
    *,
    whole: bool = True,
) -> None:
    """Print each split's counts; raise PrepareError for an empty split (or, with ``strict``, any loss).
    A shard's part (not ``whole``) may lack a split: :func:`merge` checks the whole."""
    for split, c in counts.items():
        if c["listed"]:
            print(
                f"  {split}: {c['prepared']} of {c['listed']} listed "
                f"({c['failed']} failed, {c['missing']} missing)",
                file=sys.stderr,
            )
    if failures or missing:
        print(f"  failures and missing videos are listed in {out / REPORT}", file=sys.stderr)
    empty = [s for s, c in counts.items() if c["listed"] and not c["prepared"]]
    if empty and whole:
        raise PrepareError(
            f"no video of the {' and '.join(empty)} split could be prepared; see {out / REPORT}"
        )
    if not counts["train"]["listed"] and whole:
        message = f"the train split lists no video: {out / 'train.txt'} is empty"
        if strict:
            raise PrepareError(f"--strict: {message}")
        print(f"stnet: warning: {message}", file=sys.stderr)
    if strict and (failures or missing):
        raise PrepareError(f"--strict: {len(failures)} failed and {len(missing)} missing videos")


def _stop_incomplete(target: _Target, report: dict[str, Any], why: str) -> None:
    """After an interruption or an error writing OUT: no temp file left, the report says so."""
    _remove_leftovers(target.root / CLIPS, target.own)
    report.update({"complete": False, "stopped": why})
    with contextlib.suppress(StnetError):  # the disk may still be full: the first report already says so
        _write_report(target.meta, report)


# ----------------------------------------------------------------------------------------------------
# Merging the shards of a sharded run
# ----------------------------------------------------------------------------------------------------

_SUMMED = ("leftovers_removed", "sources_changed")
_PER_RUN = {"complete", "options", "files", "counts", "failures", "missing", "warnings", "bytes", "shard"}
_PER_RUN |= {"elapsed_s", "videos_per_s", "stopped", *_SUMMED}


def _shard_reports(out: Path) -> tuple[int, list[dict[str, Any]]]:
    """The number of shards and each shard's complete report, in order; PrepareError naming a shard
    that has not run or is incomplete, UserError if ``out`` holds no shards or shards of two sizes."""
    folder = out / SHARDS
    found = sorted(
        {
            (int(m[1]), int(m[2]))
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := _SHARD_NAME.match(p.name))
        }
    )
    sizes = sorted({n for _, n in found})
    if not sizes:
        raise UserError(f"{out} holds no shards ({folder}/<i>-of-<N>): prepare with --shard i/N first")
    if len(sizes) > 1:
        raise UserError(
            f"{folder} holds shards of {' and '.join(map(str, sizes))} parts: delete the folders of the "
            "partition you no longer use, then merge"
        )
    count = sizes[0]
    reports = []
    for index in range(count):
        path = shard_folder(out, (index, count)) / REPORT
        if not path.is_file():
            raise PrepareError(f"shard {index}/{count} has not run ({path} is missing): run it, then merge")
        report = _previous_report(out, path) or {}
        if not report.get("complete"):
            why = report.get("stopped") or "still running, or killed"
            raise PrepareError(f"shard {index}/{count} is incomplete ({why}): rerun it, then merge")
        reports.append(report)
    return count, reports


def _same_run(reports: list[dict[str, Any]], classes: list[bytes]) -> None:
    """Refuse shards that were not run with the same front end, settings and classes (paths and
    ``--workers`` may differ: each machine mounts the data where it does and has its own cores)."""
    first = reports[0]
    for index, report in enumerate(reports[1:], 1):
        for key in ("command", "settings"):
            if report.get(key) != first.get(key):
                raise UserError(
                    f"shard {index} and shard 0 differ in {key}: run every shard with the same command"
                )
        if classes[index] != classes[0]:
            raise UserError(
                f"shard {index} and shard 0 have other classes: run every shard with the same inputs"
            )


def merge(out: str | os.PathLike) -> dict[str, Any]:
    """Combine the shards of ``out`` (``out/shards/<i>-of-<N>``, every one complete) into ``out``'s
    lists, ``classes.txt`` and report, as one unsharded run would have written them: each list's lines
    in the plan's order. Returns the merged report."""
    out = Path(out)
    count, reports = _shard_reports(out)
    folders = [shard_folder(out, (i, count)) for i in range(count)]
    with contextlib.ExitStack() as stack:
        for folder in folders:  # no shard may run while its files are read
            stack.enter_context(folder_lock(folder, "prepare"))
        count, reports = _shard_reports(out)  # as they are now that none can change
        classes = [_read_bytes(f / "classes.txt") for f in folders]
        _same_run(reports, classes)
        names = read_classes(folders[0] / "classes.txt")
        splits = [s for s in SPLITS if (folders[0] / f"{s}.txt").is_file()]
        lines = {split: _merged_lines(folders, split) for split in splits}
        written = ["classes.txt", REPORT, *(f"{s}.txt" for s in splits)]
        _check_outputs(out, written)
        with folder_lock(out, "prepare merge"):
            previous = _check_outputs(out, written)
            files = {f for f in (previous or {}).get("files", []) if (out / f).exists()}
            report = _merged_report(reports, files | set(written))
            target = _Target(out, out)
            lines_text = {s: [line.decode() for line in ls] for s, ls in lines.items()}
            _write_lists(target, lines_text, names, report)
    print(f"{out}: {count} shards merged", file=sys.stderr)
    _check_counts(out, report["counts"], report["failures"], report["missing"], strict=False)
    return report


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise OSFailure(e, path, "reading") from None


def _merged_lines(folders: list[Path], split: str) -> list[bytes]:
    """The lines of ``split`` of every shard, in the positions ``positions.json`` gives them."""
    placed: list[tuple[int, bytes]] = []
    for folder in folders:
        lines = _read_bytes(folder / f"{split}.txt").splitlines()
        try:
            positions = json.loads(read_text(folder / POSITIONS))[split]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{folder / POSITIONS} is damaged: rerun that shard") from None
        if len(positions) != len(lines):
            raise DataError(
                f"{folder / POSITIONS} does not match {folder / f'{split}.txt'}: rerun that shard"
            )
        placed += zip(positions, lines, strict=True)
    placed.sort(key=lambda item: item[0])
    return [line for _, line in placed]


def _merged_report(reports: list[dict[str, Any]], files: set[str]) -> dict[str, Any]:
    """One report for the whole run: counts and byte totals summed, failures, missing and warnings of
    all shards (a warning every shard gave, once), the plan's notes as shard 0 has them."""
    first = reports[0]
    counts: dict[str, dict[str, int]] = {}
    for report in reports:
        for split, c in report["counts"].items():
            total = counts.setdefault(split, dict.fromkeys(c, 0))
            for key, value in c.items():
                total[key] = total.get(key, 0) + value
    warnings: list[dict[str, str]] = []
    for w in (w for r in reports for w in r["warnings"]):
        if w not in warnings:
            warnings.append(w)
    videos = sum(r["shard"]["videos"] for r in reports)
    source = sum(r.get("bytes", {}).get("source", 0) for r in reports)
    store = sum(r.get("bytes", {}).get("store", 0) for r in reports)
    for report in reports:
        files |= set(report["files"])
    return {
        "complete": True,
        **{k: v for k, v in first.items() if k not in _PER_RUN},
        "options": {k: v for k, v in first["options"].items() if k != "shard"},
        "files": sorted(files),
        "shards": len(reports),
        "counts": counts,
        "failures": [f for r in reports for f in r["failures"]],
        "missing": [m for r in reports for m in r["missing"]],
        "warnings": warnings,
        "bytes": {
            "source": source,
            "store": store,
            "per_video": round(store / videos) if videos else 0,
            "store_to_source": round(store / source, 4) if source else None,
        },
        **{k: sum(r.get(k, 0) for r in reports) for k in _SUMMED},
        "elapsed_s": max(r.get("elapsed_s") or 0 for r in reports),  # the slowest shard
        "videos_per_s": round(sum(r.get("videos_per_s") or 0 for r in reports), 2),  # all shards at once
    }


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
    frames = {}
    if getattr(args, "filename_tmpl", None) is not None:
        if not args.frames_fps > 0:
            raise DataError(f"--frames-fps must be a positive frame rate, got {args.frames_fps}")
        frames = {
            "filename_tmpl": formats.check_frame_template(args.filename_tmpl),
            "frames_fps": args.frames_fps,
        }
    return Settings(
        args.short_side,
        args.fixed_aspect,
        args.quality,
        args.keep_partial,
        args.fps,
        args.max_frames,
        **frames,
    )


def _no_rest(rest: Sequence[str]) -> None:
    if rest:
        raise DataError(f"unexpected arguments: {' '.join(rest)}")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options as given, for the report."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command", "quiet")}


def _plan_and_execute(args: argparse.Namespace, rest: Sequence[str], make_plan: Callable[[], Plan]) -> int:
    _no_rest(rest)
    settings = _settings(args)
    execute(
        make_plan(),
        args.out,
        settings,
        workers=args.workers,
        strict=args.strict,
        progress=not args.quiet,
        options=_options(args),
        shard=args.shard,
    )
    return 0


def cmd_merge(args: argparse.Namespace, rest: Sequence[str]) -> int:
    _no_rest(rest)
    merge(args.out)
    return 0


def shard_arg(value: str) -> tuple[int, int]:
    """``i/N`` → ``(i, N)`` with 0 <= i < N (an argparse ``type=``)."""
    index, slash, count = value.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit() and int(count) >= 1):
        raise argparse.ArgumentTypeError(f"expected i/N (e.g. 0/4), got {value!r}")
    if int(index) >= int(count):
        raise argparse.ArgumentTypeError(
            f"shard {value}: i must be 0..{int(count) - 1} "
            f"(a Slurm array counts from 0: --array=0-{int(count) - 1})"
        )
    return int(index), int(count)


def cmd_prepare(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """``stnet prepare DATASET``: plan the input form ``args.dataset`` names, then execute the plan."""
    return _plan_and_execute(args, rest, lambda: INPUT_FORMS[args.dataset].plan(args))


# ----------------------------------------------------------------------------------------------------
# Input forms: the options naming a source, shared by `stnet prepare` and `stnet data check`
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputForm:
    """One way of naming a source (``stnet prepare ucf101`` ...): its options and its planner."""

    name: str
    help: str
    description: str
    add_options: Callable[[argparse.ArgumentParser], None]
    plan: Callable[[argparse.Namespace], Plan]
    folder: str  # the option (its dest) that names the video folder
    short_side: int = 256  # prepare's default --short-side for this form
    storage_options: Callable[[argparse.ArgumentParser], None] | None = None  # prepare's, for this form


def add_worker_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--workers K`` (``what`` processes) and ``--quiet`` (no progress bar)."""
    p.add_argument(
        "--workers",
        type=workers_arg(1),
        default=max(1, min(8, os.cpu_count() or 1)),
        metavar="K",
        help=f"{what} processes (default: CPU count, at most 8)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_list_file_options(p: argparse.ArgumentParser) -> None:
    """The options of annotation list files: --list, --format, --filename-tmpl and --label-file."""
    p.add_argument(
        "--list", action="append", metavar="[SPLIT=]FILE", help="annotation list (repeat per split)"
    )
    p.add_argument(
        "--format",
        choices=formats.LIST_FORMATS,
        default="auto",
        help="auto (default: from each file's first entry), video ('path label'), csv ('path,label') "
        "or rawframes ('frame_dir total_frames label')",
    )
    p.add_argument(
        "--filename-tmpl",
        "--filename_tmpl",
        dest="filename_tmpl",
        default=formats.FRAME_TEMPLATE,
        metavar="TMPL",
        help=f"rawframes: the frame files, numbered from 1 (default {formats.FRAME_TEMPLATE})",
    )
    p.add_argument(
        "--label-file",
        "--label_file",
        dest="label_file",
        metavar="FILE",
        help="class names: '<class name> <index>' lines",
    )


def _official_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default 1)")


def _ucf101_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="DIR", help="the UCF-101 video folder")
    p.add_argument(
        "--annotations", metavar="DIR", help="folder of classInd.txt, trainlist0X.txt, testlist0X.txt"
    )
    _official_split(p)
    p.add_argument(
        "--random-split",
        "--random_split",
        dest="random_split",
        type=float,
        metavar="FRACTION",
        help="instead: random split with this train fraction of actor groups gXX (reference: 0.8)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --random-split (default 0)")


def _kinetics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--csv", action="append", required=True, metavar="FILE", help="a Kinetics CSV (repeat: train, val)"
    )
    p.add_argument("--source", required=True, metavar="DIR", help="folder holding the downloaded videos")
    p.add_argument(
        "--label-file",
        "--label_file",
        dest="label_file",
        metavar="FILE",
        help="use this '<class name> <index>' label file instead of the train CSV's classes",
    )


def _hmdb51_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="DIR", help="the HMDB51 video folder")
    p.add_argument("--splits", required=True, metavar="DIR", help="folder of <class>_test_split<k>.txt")
    _official_split(p)


def _ssv2_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, metavar="DIR", help="folder of the <id>.webm videos")
    p.add_argument("--labels", required=True, metavar="FILE", help="something-something-v2-labels.json")
    p.add_argument("--train", metavar="FILE", help="something-something-v2-train.json")
    p.add_argument("--val", metavar="FILE", help="something-something-v2-validation.json")


def _frames_fps_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--frames-fps",
        "--frames_fps",
        dest="frames_fps",
        type=float,
        default=Settings.frames_fps,
        metavar="FPS",
        help="rawframes: the frame rate the frames were extracted at (default 30)",
    )


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, metavar="DIR", help="folder the list paths are relative to")
    p.add_argument("--folders", action="store_true", help="read ROOT as one folder per class")
    add_list_file_options(p)


INPUT_FORMS: dict[str, InputForm] = {
    form.name: form
    for form in (
        InputForm(
            "ucf101",
            "UCF101: official split 1-3 (or a random split by actor group)",
            "SOURCE holds <Class>/v_<Class>_gXX_cYY.avi. The official split files (classInd.txt, "
            "trainlistXX.txt, testlistXX.txt) are looked up in SOURCE/ucfTrainTestlist, next to SOURCE, "
            "or given with --annotations.",
            _ucf101_options,
            lambda a: plan_ucf101(Path(a.source), a.annotations, a.split, a.random_split, a.seed),
            "source",
            short_side=128,
        ),
        InputForm(
            "kinetics",
            "Kinetics: CSVs label,youtube_id,time_start,time_end,split",
            "Videos are found anywhere under SOURCE as <youtube_id>_<start:06d>_<end:06d>.* "
            "(e.g. <label>/<id>_000010_000020.mp4, or flat) or <youtube_id>.*. The label file is the "
            "reference's: sorted class names of the train CSV. Missing videos are counted and listed.",
            _kinetics_options,
            lambda a: plan_kinetics(a.csv, Path(a.source), a.label_file),
            "source",
        ),
        InputForm(
            "hmdb51",
            "HMDB51: official split 1-3 (<class>_test_split<k>.txt files)",
            "SOURCE holds <class>/<name>.avi (the 51 official folders). --splits holds the official "
            "split files <class>_test_split<k>.txt, lines 'name.avi 0|1|2' (1 train, 2 test: the val "
            "split, 0 unused). Unused and missing videos are counted and listed in the report.",
            _hmdb51_options,
            lambda a: plan_hmdb51(Path(a.source), Path(a.splits), a.split),
            "source",
        ),
        InputForm(
            "ssv2",
            "Something-Something V2: the labels, train and validation JSON files",
            "Each entry's class is its template with the square brackets dropped, looked up in --labels; "
            "its video is SOURCE/<id>.webm (VP9). SSv2 classes depend on direction: train with flip "
            "false (the ssv2 config does).",
            _ssv2_options,
            lambda a: plan_ssv2(Path(a.source), a.labels, a.train, a.val),
            "source",
        ),
        InputForm(
            "list",
            "your own videos: MMAction2/PySlowFast lists, rawframe lists or a folder per class",
            "Each --list line is 'path label' (MMAction2 video lists, PySlowFast CSVs), 'path,label' "
            "(PySlowFast CSVs with a comma) or 'frame_dir total_frames label' (MMAction2 rawframe lists), "
            "detected per file or chosen with --format; labels: integers 0..K-1 or class names, one kind "
            "per file. The split comes from SPLIT=FILE or from the file name (train/val/test). With "
            "--folders, ROOT/<class>/<video> (or ROOT/train/..., ROOT/val/...) is used instead.",
            _list_options,
            lambda a: plan_list(
                a.list or [], Path(a.root), a.folders, a.label_file, a.format, a.filename_tmpl
            ),
            "root",
            storage_options=_frames_fps_option,
        ),
    )
}


def _common(p: argparse.ArgumentParser, short_side: int) -> None:
    """prepare's own options: the output folder, workers and how frames are stored."""
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume in it)")
    add_worker_options(p, "decoding")
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
        "--fps",
        type=float_arg(0, 1000, low_open=True),
        default=None,
        metavar="F",
        help="store at most F frames per second (default: every frame); sampling stays in source time",
    )
    p.add_argument(
        "--max-frames",
        "--max_frames",
        dest="max_frames",
        type=int_arg(1),
        default=None,
        metavar="K",
        help="store at most K frames per video, spread over the whole video (a lower rate for long ones)",
    )
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
    p.add_argument(
        "--shard",
        type=shard_arg,
        metavar="i/N",
        help="convert only shard i (0..N-1) of the videos, by a stable hash of their paths; each shard "
        "writes OUT/shards/i-of-N; `stnet prepare merge OUT` combines them once all are complete",
    )


def register_cli(subparsers: Any) -> None:
    """Add ``prepare`` (``ucf101``, ``kinetics``, ``hmdb51``, ``ssv2``, ``list``, ``merge``) to an
    argparse sub-parser collection."""
    p = subparsers.add_parser(
        "prepare",
        help="turn videos into a training-ready clip store (UCF101, Kinetics, HMDB51, SSv2, your lists)",
        description="Decode videos once into compact clip files (resized JPEG frames, any frame readable "
        "alone) plus classes.txt, train.txt, val.txt (test.txt for labelled Kinetics test rows) and "
        "prepare_report.json. The source is never modified; --out may not hold an input or a file "
        "prepare did not write; a rerun skips finished videos (and converts replaced ones again); bad "
        "videos are skipped and listed with their reason.",
    )
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for form in INPUT_FORMS.values():
        f = sub.add_parser(form.name, help=form.help, description=form.description)
        form.add_options(f)
        if form.storage_options is not None:
            form.storage_options(f)
        _common(f, form.short_side)
        f.set_defaults(func=cmd_prepare)

    m = sub.add_parser(
        "merge",
        help="combine the shards of a --shard i/N run into OUT's lists and report",
        description="Once every shard OUT/shards/<i>-of-<N> is complete, write OUT/train.txt, val.txt "
        "(test.txt), classes.txt and prepare_report.json as one unsharded run would have; refused "
        "while a shard is missing, incomplete or running.",
    )
    m.add_argument("out", metavar="OUT", help="the --out folder the shards wrote into")
    m.set_defaults(func=cmd_merge)
