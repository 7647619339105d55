"""Small file helpers shared by every stage: atomic writes, output-folder locks, input protection."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from stnet.errors import OSFailure, UserError

TEMP_SUFFIX = ".tmp"  # temporary files are named ".<name>.<random>.tmp" beside their target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    A crash or an exception leaves ``path`` as it was (absent, or the previous complete file), never a
    half-written file that a later run would trust.

    An ``OSError`` (full disk, read-only folder, a file where a folder should be) becomes an
    :class:`~stnet.errors.OSFailure` naming ``path`` rather than the temporary file.
    """
    path = Path(path)
    try:
        make_folder(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should get the usual permissions
    except OSError as e:
        raise OSFailure(e, path, "writing") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise OSFailure(e, path, "writing") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def make_folder(folder: str | os.PathLike) -> None:
    """``mkdir -p folder``; a file in the way is ``ENOTDIR`` (``mkdir`` itself says "file exists")."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


LOCK_NAME = ".stnet.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (for a prepare, train or export run writing into it).

    A second stnet run into the same folder gets a one-line :class:`~stnet.errors.UserError` naming the
    PID of the run that holds it, instead of deleting that run's temporary files. The lock is an
    ``flock`` on ``folder/.stnet.lock``: the kernel releases it when the holder exits, even after
    ``kill -9``, so a stale lock file never blocks a later run.
    """
    folder = Path(folder)
    busy = (
        f"{folder} is in use by another stnet {what} (PID {{pid}}); wait for it to finish or choose "
        "another output folder"
    )
    with lock_file(folder / LOCK_NAME, busy):
        yield folder


@contextlib.contextmanager
def lock_file(
    lock: str | os.PathLike, busy: str, *, remove: bool = False, target: str | os.PathLike | None = None
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock``, created (with its folders) if absent.

    If another process holds it, raise :class:`~stnet.errors.UserError` with the message ``busy``, its
    ``{pid}`` replaced by the holder's PID. The kernel releases the lock when the holder exits, even
    after ``kill -9``. With ``remove`` the file is deleted on release (nothing is left beside an output
    when the run ends); a run that locked a file just deleted by another checks the path still names
    the file it locked, and otherwise locks the new one. An OSError names ``target`` (the file the
    lock protects) when given, else the lock file.
    """
    import fcntl

    lock = Path(lock)
    while True:
        try:
            make_folder(lock.parent)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            if target is not None:
                raise OSFailure(e, target, "writing") from None
            raise OSFailure(e, lock, "creating the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(busy.replace("{pid}", holder)) from None
        if not remove or _same_file(fd, lock):
            break
        os.close(fd)  # the holder removed the file we opened: lock the one now at that path
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if remove:
            with contextlib.suppress(OSError):
                lock.unlink()
        os.close(fd)  # closing the descriptor releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except OSError:
        return False


def refuse_overwriting_inputs(
    outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]
) -> None:
    """Raise :class:`~stnet.errors.UserError` if an output path is one of the inputs (a list, CSV, label
    file, checkpoint or the video root itself), or an output folder holds one. An output folder *inside*
    an input folder (``--root videos --out videos/prepared``) is fine.

    Paths are compared after resolving links, so ``D/./train.txt`` and a symlink to it count as the same
    file.
    """
    ins = [(Path(p), Path(p).resolve()) for p in inputs]
    for out in outputs:
        out_r = Path(out).resolve()
        for given, resolved in ins:
            if out_r == resolved:
                raise UserError(f"the output {out} is also an input ({given}); choose another output path")
            if out_r in resolved.parents:
                raise UserError(
                    f"the output folder {out} holds the input {given}; stnet never writes where its "
                    "inputs are: choose another output folder"
                )


def check_writable_folder(folder: str | os.PathLike, what: str = "reports") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it, before a long run whose
    results go there; OSFailure naming the folder otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSFailure(e, folder, f"writing {what} to") from None
    return folder


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, as disks are sold: ``"1.23 GB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
