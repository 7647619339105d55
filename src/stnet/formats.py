"""The annotation formats ``stnet prepare`` reads, beyond UCF101's and Kinetics': parsers only.

* **List files** (``prepare list``), one entry per line, in one of :data:`LIST_FORMATS`:
  ``video`` — ``path label`` (MMAction2's video lists, PySlowFast's CSVs with a space; the path may hold
  spaces: the label is the last field); ``rawframes`` — ``frame_dir total_frames label`` (MMAction2's
  rawframe lists: a folder of JPEG frames named by ``--filename-tmpl``); ``csv`` — ``path,label``
  (PySlowFast's CSVs with ``DATA.PATH_LABEL_SEPARATOR ","``). ``auto`` looks at each file's first entry.
* **HMDB51**'s official split files ``<class>_test_split<k>.txt`` (``name.avi 0|1|2``).
* **Something-Something V2**'s JSON files (labels, train, validation).
* **Frame folders** (what a rawframe list names): their frames, in order, as RGB images.

Every parser returns plain entries (split, relative path, label, ``file:line``); :mod:`stnet.prepare`
turns them into a plan. Errors are one-line :class:`~stnet.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from stnet.errors import DataError, os_error_line
from stnet.lists import read_lines, read_text
from stnet.video import is_video_file

__all__ = [
    "FRAME_TEMPLATE",
    "LIST_FORMATS",
    "ListEntry",
    "check_frame_template",
    "count_frame_folder",
    "frame_folder_bytes",
    "frame_name",
    "iter_frame_folder",
    "missing_frame",
    "read_frame",
    "read_hmdb51_splits",
    "read_list",
    "read_ssv2",
    "ssv2_class",
]

LIST_FORMATS = ("auto", "video", "rawframes", "csv")
FRAME_TEMPLATE = "img_{:05}.jpg"  # MMAction2's extracted frames: img_00001.jpg, img_00002.jpg, ...
FIRST_FRAME = 1  # MMAction2 numbers extracted frames from 1 (its rawframe datasets' start_index)
HMDB51_CLASSES = 51

_PLAIN_INT = re.compile(r"^\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HMDB_SPLIT_FILE = re.compile(r"^(.+)_test_split([123])\.txt$")


@dataclass(frozen=True)
class ListEntry:
    """One annotation entry: its split, its path relative to the root, its label (text), its origin."""

    split: str
    rel: str
    label: str
    where: str  # "file:line", or the folder
    frames: int | None = None  # rawframe lists: the frame count the list gives (None: a video file)


# ----------------------------------------------------------------------------------------------------
# List files
# ----------------------------------------------------------------------------------------------------


def _detect(line: str, root: Path) -> str:
    """The format of a list whose first entry is ``line`` (see :data:`LIST_FORMATS`)."""
    fields = line.split()
    if (
        len(fields) == 3
        and _PLAIN_INT.match(fields[1])
        and _PLAIN_INT.match(fields[2])
        and not is_video_file(fields[0])
        and (root / fields[0]).is_dir()
    ):
        return "rawframes"
    path, comma, label = line.rpartition(",")
    if comma and path.strip() and label.strip() and not any(c.isspace() for c in label.strip()):
        return "csv"
    return "video"


def _split_line(line: str, fmt: str, where: str) -> tuple[str, str, int | None]:
    """``(path, label, frames)`` of one entry line in format ``fmt``."""
    if fmt == "rawframes":
        fields = line.split()
        if len(fields) != 3 or not _PLAIN_INT.match(fields[1]):
            raise DataError(f"{where}: expected 'frame_dir total_frames label' (rawframes), got {line!r}")
        return fields[0], fields[2], int(fields[1])
    if fmt == "csv":
        path, comma, label = line.rpartition(",")
        if not comma or not path.strip() or not label.strip():
            raise DataError(f"{where}: expected 'path,label' (csv), got {line!r}")
        return path.strip(), label.strip(), None
    parts = line.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise DataError(f"{where}: expected 'relative/path label', got {line!r}")
    return parts[0], parts[1], None


def read_list(split: str, path: Path, fmt: str, root: Path) -> tuple[list[ListEntry], str | None, str]:
    """The entries of one list file, its label kind (``"integer"``, ``"name"``; None if it lists nothing)
    and its format (``fmt``, or the detected one when ``fmt`` is ``auto``).

    Lines starting with ``#`` are comments. The first label decides the kind of the whole file; a label
    of the other kind (``O`` among integers, ``-1`` or ``1.5`` anywhere, ``3`` among names) is a
    one-line error naming its line.
    """
    entries: list[ListEntry] = []
    kind: str | None = None
    first = ""
    for number, line in read_lines(path, "list file"):
        if line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if fmt == "auto":
            fmt = _detect(line, root)
        rel, label, frames = _split_line(line, fmt, where)
        looks_numeric = bool(_NUMBER.match(label))
        if kind is None:
            kind, first = ("integer" if looks_numeric else "name"), f"line {number}: {label!r}"
        if kind == "integer" and not _PLAIN_INT.match(label):
            raise DataError(
                f"{where}: label {label!r} is not an integer >= 0, and this list's labels are integers "
                f"({first}); use integers 0..K-1 or class names throughout"
            )
        if kind == "name" and looks_numeric:
            raise DataError(
                f"{where}: label {label!r} is a number, and this list's labels are class names "
                f"({first}); use integers 0..K-1 or class names throughout"
            )
        entries.append(ListEntry(split, rel, label, where, frames))
    return entries, kind, fmt


# ----------------------------------------------------------------------------------------------------
# Frame folders (MMAction2 rawframes)
# ----------------------------------------------------------------------------------------------------


def check_frame_template(template: str) -> str:
    """``template`` if it names frame files by number (``img_{:05}.jpg``); else a one-line DataError."""
    try:
        one, two = template.format(FIRST_FRAME), template.format(FIRST_FRAME + 1)
    except (IndexError, KeyError, ValueError) as e:
        raise DataError(
            f"--filename-tmpl {template!r} is not a frame-name template ({e}): use e.g. {FRAME_TEMPLATE}"
        ) from None
    if one == two or "/" in one or os.sep in one or one in (".", ".."):
        raise DataError(
            f"--filename-tmpl {template!r} must name one file per frame number inside the frame folder "
            f"(e.g. {FRAME_TEMPLATE})"
        )
    return template


def _frame_path(folder: str | os.PathLike, template: str, index: int) -> str:
    return os.path.join(folder, frame_name(template, index))


def frame_name(template: str, index: int) -> str:
    """The file name of frame ``index`` (counted from 0) of a folder named by ``template``."""
    return template.format(FIRST_FRAME + index)


def frame_folder_bytes(folder: str | os.PathLike, template: str, frames: int) -> int:
    """The bytes of the first ``frames`` frame files of ``folder`` (OSError if one is not there)."""
    return sum(os.path.getsize(_frame_path(folder, template, i)) for i in range(frames))


def read_frame(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """The frame file ``path`` decoded as RGB, and its image format (``JPEG``, ``PNG``, ...). A file that
    is not a readable image is a DataError naming it; a file that is not there, FileNotFoundError."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), str(image.format)
    except FileNotFoundError:
        raise
    except OSError as e:  # PIL.UnidentifiedImageError, a truncated JPEG, a permission error
        raise DataError(f"frame {os.path.basename(path)}: not a readable image ({e})") from None


def missing_frame(template: str, index: int, listed: int) -> str:
    """Why a frame folder listed with ``listed`` frames cannot be read: frame ``index`` (from 0) is not
    there."""
    return f"lists {listed} frames, but {frame_name(template, index)} is not there"


def _frame_number(template: str, name: str) -> int | None:
    """The number the file name ``name`` has as a frame file of ``template`` (None: it is not one)."""
    pattern = "".join(
        re.escape(literal) + (r"(\d+)" if field is not None else "")
        for literal, field, _spec, _conversion in string.Formatter().parse(template)
    )
    m = re.fullmatch(pattern, name)
    if not m:
        return None
    number = int(m.group(1))
    return number if template.format(number) == name else None


def count_frame_folder(folder: str | os.PathLike, template: str, listed: int | None = None) -> int:
    """How many frames of ``folder`` are read (its frames numbered from 1 on, with no gap): ``listed``
    when a rawframe list gives the count and every one of them is there; without a count, the frames up
    to the first number with no file, when no later number has one. Anything else, a one-line DataError
    naming the first missing frame: a folder cut short at a gap would silently lose frames."""
    try:
        names = set(os.listdir(folder))
    except OSError as e:
        raise DataError(f"cannot read the frame folder: {os_error_line(e)}") from None
    if listed is not None:
        if listed < 1:
            raise DataError(f"lists {listed} frames")
        gap = next((i for i in range(listed) if frame_name(template, i) not in names), None)
        if gap is not None:
            raise DataError(missing_frame(template, gap, listed))
        return listed
    count = 0
    while frame_name(template, count) in names:
        count += 1
    if count == 0:
        raise DataError(f"no frame {frame_name(template, 0)} in the folder (see --filename-tmpl)")
    gap = FIRST_FRAME + count
    later = [n for n in (_frame_number(template, name) for name in names) if n is not None and n > gap]
    if later:
        raise DataError(
            f"{frame_name(template, count)} is not there, but {template.format(min(later))} is: "
            f"a gap in the frame numbers after {count} frames"
        )
    return count


def iter_frame_folder(
    folder: str | os.PathLike, template: str, frames: int, keep: Callable[[int], bool] | None = None
) -> Iterator[Image.Image]:
    """The first ``frames`` frames of ``folder`` (``template.format(1)``, ``...format(2)``, ...; see
    :func:`count_frame_folder`) as RGB images; a frame that is not a readable image, or not there, is a
    DataError naming it. With ``keep``, it is called with every frame's index (from 0), in order, and only
    the frames it accepts are read."""
    for index in range(frames):
        if keep is not None and not keep(index):
            continue
        try:
            rgb, _ = read_frame(_frame_path(folder, template, index))
        except FileNotFoundError:
            raise DataError(missing_frame(template, index, frames)) from None
        yield rgb


# ----------------------------------------------------------------------------------------------------
# HMDB51
# ----------------------------------------------------------------------------------------------------

HMDB51_SPLIT_OF = {"1": "train", "2": "val", "0": "unused"}  # the split files' own codes; 2 is "test"


def read_hmdb51_splits(folder: Path, split: int) -> tuple[list[str], list[ListEntry], list[str]]:
    """The class names (sorted, as the split files and the official video folders spell them), the
    train/val entries (``<class>/<name>.avi``; the official "test" videos are the ``val`` split) and
    the entries marked 0 (unused by this split), from ``folder/<class>_test_split<split>.txt``."""
    if not folder.is_dir():
        raise DataError(f"HMDB51 split folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _HMDB_SPLIT_FILE.match(path.name)
        if m and int(m.group(2)) == split and path.is_file():
            files[m.group(1)] = path
    if not files:
        raise DataError(
            f"{folder} holds no <class>_test_split{split}.txt files (the official HMDB51 split files, "
            "testTrainMulti_7030_splits)"
        )
    entries: list[ListEntry] = []
    unused: list[str] = []
    for name, path in files.items():
        for number, line in read_lines(path, "split file"):
            where = f"{path}:{number}"
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in HMDB51_SPLIT_OF:
                raise DataError(
                    f"{where}: expected '<video>.avi 0|1|2' (0 unused, 1 train, 2 test), got {line!r}"
                )
            rel = f"{name}/{parts[0]}"
            if parts[1] == "0":
                unused.append(rel)
            else:
                entries.append(ListEntry(HMDB51_SPLIT_OF[parts[1]], rel, name, where))
    return sorted(files), entries, unused


# ----------------------------------------------------------------------------------------------------
# Something-Something V2
# ----------------------------------------------------------------------------------------------------


def _read_json(path: str | os.PathLike, what: str) -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def ssv2_class(template: str) -> str:
    """The class of an SSv2 entry: its template with the square brackets dropped
    (``Pushing [something] from left to right`` → ``Pushing something from left to right``)."""
    return template.replace("[", "").replace("]", "")


def read_ssv2_labels(path: str | os.PathLike) -> list[str]:
    """Class names by index from ``something-something-v2-labels.json`` (``{"class text": "index"}``)."""
    data = _read_json(path, "labels file")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a JSON object mapping class text to its index")
    names: dict[int, str] = {}
    for text, value in data.items():
        index = (
            int(value)
            if isinstance(value, int) or (isinstance(value, str) and _PLAIN_INT.match(value))
            else -1
        )
        if index < 0:
            raise DataError(f"{path}: the index of {text!r} is {value!r}, not an integer >= 0")
        if index in names:
            raise DataError(f"{path}: class index {index} is given to {names[index]!r} and {text!r}")
        names[index] = text
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1}, each once")
    return [names[i] for i in range(len(names))]


def read_ssv2(
    labels: str | os.PathLike, splits: dict[str, str | os.PathLike]
) -> tuple[list[str], list[ListEntry], list[dict[str, str]]]:
    """SSv2's class names, the entries of each split's JSON (``rel`` is the video id, ``label`` the
    class index as text) and the entries refused (no id, no template, a template not in ``labels``)."""
    classes = read_ssv2_labels(labels)
    index_of = {name: i for i, name in enumerate(classes)}
    entries: list[ListEntry] = []
    refused: list[dict[str, str]] = []
    for split, path in splits.items():
        data = _read_json(path, "annotation file")
        if not isinstance(data, list):
            raise DataError(f'{path}: expected a JSON list of {{"id", "template", ...}} objects')
        for number, item in enumerate(data):
            where = f"{path}[{number}]"
            video = str(item.get("id", "")).strip() if isinstance(item, dict) else ""
            template = item.get("template") if isinstance(item, dict) else None
            reason = None
            if not video or "/" in video or video in (".", ".."):
                reason = f'{where}: no usable "id"'
            elif not isinstance(template, str):
                reason = f'{where}: no "template" (the test set\'s JSON has no labels)'
            elif ssv2_class(template) not in index_of:
                reason = f"{where}: class {ssv2_class(template)!r} (template {template!r}) is not in {labels}"
            if reason:
                refused.append({"split": split, "source": video or json.dumps(item)[:80], "reason": reason})
                continue
            entries.append(ListEntry(split, video, str(index_of[ssv2_class(str(template))]), where))
    return classes, entries, refused
