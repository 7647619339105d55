"""The text files stnet reads: any text input as UTF-8 (BOM-safe), and class files.

Every list, CSV and class file a user gives is read through :func:`read_text`: a UTF-8 byte-order mark
(Excel writes one) is dropped, and a file that is not UTF-8 is a one-line :class:`DataError` naming the
file and the byte offset. :func:`read_classes` is the one parser of class files (``classes.txt``,
``--label-file``, ``--classes``); :func:`check_class_name` says whether a name survives a round trip
through ``classes.txt``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from stnet.errors import DataError, OSFailure

__all__ = ["check_class_name", "read_classes", "read_lines", "read_text"]

_INDEXED = re.compile(r"^(.*\S)\s+(\d+)$")


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 without a leading byte-order mark.

    ``what`` names the file in the error when it does not exist ("list file not found: ...").
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None


def read_lines(path: str | os.PathLike, what: str = "file") -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of every non-blank line of a text file (any line ending)."""
    lines = read_text(path, what).splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def read_classes(path: str | os.PathLike, *, plain_names: bool = False) -> list[str]:
    """Class names by index from ``<class name> <index>`` lines (the reference's label file format).

    Indices must be 0..n-1, each once, in any order. With ``plain_names``, a file whose lines are not all
    of that form is read as one class name per line instead.
    """
    path = Path(path)
    lines = read_lines(path, "class file")
    matches = [(_INDEXED.match(line), number, line) for number, line in lines]
    if plain_names and not all(m for m, _, _ in matches):
        return [line for _, line in lines]
    names: dict[int, str] = {}
    for m, number, line in matches:
        if m is None:
            raise DataError(f"{path}:{number}: expected '<class name> <index>', got {line!r}")
        index = int(m.group(2))
        if index in names:
            raise DataError(f"{path}:{number}: class index {index} appears twice")
        names[index] = m.group(1)
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1}, each once")
    return [names[i] for i in range(len(names))]


def check_class_name(name: str, origin: str) -> None:
    """Raise :class:`DataError` unless ``name`` reads back unchanged from a ``<name> <index>`` line.

    ``origin`` says where the name comes from ("the folder ...", "line 3 of train.txt").
    """
    problem = None
    if not name.strip():
        problem = "it is empty"
    elif name != name.strip():
        problem = "it starts or ends with white space"
    elif any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        problem = "it holds a line break, tab, control character or bytes that are not UTF-8"
    if problem:
        raise DataError(
            f"class name {name!r} ({origin}) cannot be written to classes.txt: {problem}; rename it"
        )
