"""The errors stnet reports to its users.

Every error a user can cause derives from :class:`StnetError`; the CLI prints its message as one
``stnet: error: ...`` line (exit code :attr:`StnetError.exit_code`) and never a traceback. Modules keep
their own subclasses where the name says something (``WeightsError``, ``ExportError``); the shared ones
live here so that a module needs no heavy import (PyAV, ONNX) just to raise one.
"""

from __future__ import annotations

import errno
import os


class StnetError(Exception):
    """An error caused by the user's input or environment, reported as one line without a traceback."""

    exit_code = 1


class ConfigError(StnetError, ValueError):
    """A bad configuration key or value; the message is one line that says how to fix it."""

    exit_code = 2


class UserError(StnetError, ValueError):
    """A bad command-line argument or combination of arguments."""


class DataError(StnetError, ValueError):
    """A dataset, list or video that cannot be used; the message is one line that says which and why."""


_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error",
}


def os_error_line(e: OSError, path: str | os.PathLike | None = None, doing: str | None = None) -> str:
    """One line for an operating-system error: the cause, what stnet was doing, and the path.

    ``path`` names the file the user knows (e.g. the checkpoint) when ``e`` is about a temporary file
    written on its behalf: "no space left on device writing runs/x/checkpoints/last.pt".
    """
    cause = _CAUSES.get(e.errno or -1) or (e.strerror or str(e) or type(e).__name__).rstrip(".").lower()
    where = path if path is not None else e.filename
    if where is None:
        return cause
    line = f"{cause} {doing} {os.fspath(where)}" if doing else f"{cause}: {os.fspath(where)}"
    if e.filename2 is not None and path is None:
        line += f" -> {os.fspath(e.filename2)}"
    return line


class OSFailure(StnetError, OSError):
    """An :class:`OSError` while stnet read or wrote ``path``, reported with the path the user knows.

    Still an ``OSError``, so code that handles operating-system errors keeps handling it.
    """

    def __init__(self, e: OSError, path: str | os.PathLike | None = None, doing: str | None = None) -> None:
        super().__init__(os_error_line(e, path, doing))
        self.errno = e.errno
