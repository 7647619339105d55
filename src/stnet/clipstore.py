"""The clip store: one ``.stclip`` file per video, JPEG frames behind an index of byte offsets.

Layout (little endian)::

    header   40 bytes   magic b"STNCLIP1", version u32 (1), frames u32, width u32, height u32,
                        fps f64, index_offset u64
    frames   JPEG bytes of frame 0, 1, ..., n-1, back to back
    index    (n + 1) u64 absolute offsets: frame i is bytes [offset[i], offset[i+1]); offset[n] is
             index_offset itself
    source   48 bytes (version 2): the source video's size u64, mtime_ns i64 and the SHA-256 of its
             first and last MiB (all zero: unknown), so that a rerun notices a replaced source
    rate     16 bytes (version 3): the source's frame rate f64 and frame count u64. The header's fps is
             the rate of the stored frames: lower when ``prepare --fps``/``--max-frames`` kept only
             some frames (:class:`stnet.sampling.Timeline` maps the source's frames to the stored ones)

Version 1 files (without the source record) and version 2 files (without the rate record: every
source frame stored) are still read.

Any frame is read with two small reads (header, index) plus one per run of nearby frames, without
decoding the others. There is no pickle: reading a file never runs code. A file is *complete* only if
its header, index and size agree; a file cut short (a killed writer, a full disk) is recognised and not
trusted. Writers use :func:`stnet.fileio.atomic_path`, so a half-written file never even gets the
final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

try:  # libjpeg-turbo with little overhead: ~2.5x faster than Pillow on small frames
    import simplejpeg
except ImportError:  # pragma: no cover - Pillow is always there
    simplejpeg = None

from stnet.errors import DataError
from stnet.fileio import atomic_path
from stnet.sampling import Timeline

SUFFIX = ".stclip"
MAGIC = b"STNCLIP1"
VERSION = 3  # what is written; 1 (no source record) and 2 (no rate record) are still read
_READABLE = (1, 2, 3)
_HEADER = struct.Struct("<8sIIIIdQ")
HEADER_SIZE = _HEADER.size  # 40
_SOURCE = struct.Struct("<Qq32s")
SOURCE_SIZE = _SOURCE.size  # 48
_RATE = struct.Struct("<dQ")
RATE_SIZE = _RATE.size  # 16
_HASHED = 1 << 20  # bytes hashed at each end of a source video
_MAX_GAP = 4  # read nearby frames in one read when at most this many unwanted frames lie between them


@dataclasses.dataclass(frozen=True)
class SourceStamp:
    """Which source file a clip was converted from: its size, mtime and a hash of its two ends."""

    size: int
    mtime_ns: int
    digest: bytes  # SHA-256 of the first and the last MiB

    @classmethod
    def of(cls, path: str | os.PathLike) -> SourceStamp:
        """The stamp of the file at ``path`` now (OSError if it cannot be read)."""
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return cls(st.st_size, st.st_mtime_ns, _ends_digest(f, st.st_size))

    def matches(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` still holds the file this stamp describes.

        Same size and mtime: yes (nothing is read). Same size, other mtime (a copy without ``-p``): the
        hash of both ends decides. Another size, or an unreadable file: no.
        """
        try:
            st = os.stat(path)
            if st.st_size != self.size:
                return False
            if st.st_mtime_ns == self.mtime_ns:
                return True
            with open(path, "rb") as f:
                return _ends_digest(f, st.st_size) == self.digest
        except OSError:
            return False


def _ends_digest(f: io.BufferedReader, size: int) -> bytes:
    h = hashlib.sha256(f.read(_HASHED))
    if size > _HASHED:
        f.seek(max(_HASHED, size - _HASHED))
        h.update(f.read(_HASHED))
    return h.digest()


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """What the header of a clip file says (and, from version 2 on, which source it came from)."""

    num_frames: int
    width: int
    height: int
    fps: float
    index_offset: int
    version: int = VERSION
    source: SourceStamp | None = None
    source_fps: float = 0.0  # before version 3: the stored rate (every frame was stored)
    source_frames: int = 0  # before version 3: num_frames

    @property
    def size(self) -> int:
        """The size a complete file with this header has."""
        trailer = (SOURCE_SIZE if self.version >= 2 else 0) + (RATE_SIZE if self.version >= 3 else 0)
        return self.index_offset + 8 * (self.num_frames + 1) + trailer

    @property
    def timeline(self) -> Timeline:
        """How the stored frames sit on the source's frames (what the samplers sample from)."""
        return Timeline(self.num_frames, self.fps, self.source_frames, self.source_fps)


def _parse_header(data: bytes, path: str | os.PathLike) -> ClipInfo:
    if len(data) < HEADER_SIZE:
        raise DataError(f"{path}: not a clip file (too short)")
    magic, version, n, width, height, fps, index_offset = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DataError(f"{path}: not a clip file (bad magic)")
    if version not in _READABLE:
        raise DataError(f"{path}: clip file version {version} is not supported (expected {VERSION})")
    if index_offset < HEADER_SIZE:
        raise DataError(f"{path}: clip file is incomplete (a writer was interrupted)")
    return ClipInfo(n, width, height, fps, index_offset, version, None, fps, n)


def _read_trailer(f: io.BufferedReader, info: ClipInfo) -> ClipInfo:
    """``info`` with what the records after the index say (source stamp, source rate and count)."""
    if info.version < 2:
        return info
    f.seek(info.index_offset + 8 * (info.num_frames + 1))
    data = f.read(SOURCE_SIZE + RATE_SIZE)
    if len(data) < SOURCE_SIZE:
        return info
    size, mtime_ns, digest = _SOURCE.unpack_from(data)
    if digest != bytes(32):
        info = dataclasses.replace(info, source=SourceStamp(size, mtime_ns, digest))
    if info.version >= 3 and len(data) == SOURCE_SIZE + RATE_SIZE:
        source_fps, source_frames = _RATE.unpack_from(data, SOURCE_SIZE)
        info = dataclasses.replace(info, source_fps=source_fps, source_frames=source_frames)
    return info


def read_info(path: str | os.PathLike) -> ClipInfo:
    """The header of the clip file at ``path``, with its trailing records (DataError if it is not one)."""
    with open(path, "rb") as f:
        return _read_trailer(f, _parse_header(f.read(HEADER_SIZE), path))


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole, consistent clip file (the test a resumed ``prepare`` trusts)."""
    try:
        with open(path, "rb") as f:
            info = _parse_header(f.read(HEADER_SIZE), path)
            if info.num_frames == 0:
                return False
            if os.fstat(f.fileno()).st_size != info.size:
                return False
            f.seek(info.index_offset)
            offsets = np.frombuffer(f.read(8 * (info.num_frames + 1)), "<u8")
            if offsets[0] != HEADER_SIZE or offsets[-1] != info.index_offset or np.any(np.diff(offsets) <= 0):
                return False
            f.seek(int(offsets[-1]) - 2)
            return f.read(2) == b"\xff\xd9"  # the last JPEG's end-of-image marker
    except (OSError, DataError):
        return False


class ClipWriter:
    """Stream JPEG frames into a clip file; the file appears, complete, only when the ``with`` block ends.

    >>> with ClipWriter("v.stclip", fps=25.0) as w:   # doctest: +SKIP
    ...     for image in frames:
    ...         w.add_image(image, quality=90)
    """

    def __init__(self, path: str | os.PathLike, fps: float = 0.0, source: SourceStamp | None = None) -> None:
        self.path = Path(path)
        self.fps = float(fps)  # of the stored frames
        self.source = source
        # the source's rate and frame count when only some of its frames are stored (set before the end
        # of the with block); by default every frame is stored
        self.source_fps: float | None = None
        self.source_frames: int | None = None
        self.size: tuple[int, int] | None = None
        self.offsets: list[int] = [HEADER_SIZE]
        self._atomic = atomic_path(self.path)
        self._file: io.BufferedWriter | None = None

    def __enter__(self) -> ClipWriter:
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "wb")  # closed in __exit__
        self._file.write(b"\0" * HEADER_SIZE)  # a zero header marks the file incomplete until the end
        return self

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    def add_jpeg(self, data: bytes, size: tuple[int, int]) -> None:
        """Append one JPEG-encoded frame of ``size`` (width, height); all frames must share a size."""
        if self._file is None:
            raise RuntimeError("ClipWriter used outside its with block")
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise DataError(
                f"frame {self.num_frames} is {size[0]}x{size[1]}, the clip is "
                f"{self.size[0]}x{self.size[1]} (the video changes resolution)"
            )
        self._file.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def add_image(self, image: Image.Image, quality: int = 90) -> None:
        """JPEG-encode an RGB PIL image (4:2:0, like ffmpeg and OpenCV) and append it."""
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        self.add_jpeg(buf.getvalue(), image.size)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._file is not None
        f, self._file = self._file, None
        try:
            try:
                if exc_type is None:
                    if self.num_frames == 0 or self.size is None:
                        raise DataError("no frames to write")
                    index_offset = self.offsets[-1]
                    f.write(np.asarray(self.offsets, "<u8").tobytes())
                    stamp = self.source or SourceStamp(0, 0, bytes(32))
                    f.write(_SOURCE.pack(stamp.size, stamp.mtime_ns, stamp.digest))
                    source_fps = self.fps if self.source_fps is None else self.source_fps
                    source_frames = self.num_frames if self.source_frames is None else self.source_frames
                    f.write(_RATE.pack(source_fps, source_frames))
                    f.seek(0)
                    f.write(
                        _HEADER.pack(
                            MAGIC,
                            VERSION,
                            self.num_frames,
                            self.size[0],
                            self.size[1],
                            self.fps,
                            index_offset,
                        )
                    )
            finally:
                f.close()  # flushes: a full disk may show only here
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)  # removes the temp file; OSError → OSFailure
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def write_clip(
    path: str | os.PathLike, jpegs: Sequence[bytes], size: tuple[int, int], fps: float = 0.0
) -> None:
    """Write already-encoded JPEG frames of one ``size`` (width, height) as a clip file."""
    with ClipWriter(path, fps) as writer:
        for data in jpegs:
            writer.add_jpeg(data, size)


def _runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted unique indices grouped into inclusive ranges with gaps of at most ``_MAX_GAP`` frames."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if runs and i - runs[-1][1] <= _MAX_GAP + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


class ClipReader:
    """Random access to the frames of one clip file. Cheap to create; use as a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        try:
            self.info = _read_trailer(self._file, _parse_header(self._file.read(HEADER_SIZE), self.path))
            self._file.seek(self.info.index_offset)
            raw = self._file.read(8 * (self.info.num_frames + 1))
            if len(raw) != 8 * (self.info.num_frames + 1):
                raise DataError(f"{self.path}: clip file is truncated")
            self.offsets = np.frombuffer(raw, "<u8").astype(np.int64)
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return self.info.num_frames

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def read_jpegs(self, indices: Sequence[int]) -> list[bytes]:
        """The JPEG bytes of the given frames, in the order asked (repeats allowed)."""
        n = self.info.num_frames
        for i in indices:
            if not 0 <= i < n:
                raise IndexError(f"{self.path}: frame {i} out of range (the clip has {n} frames)")
        found: dict[int, bytes] = {}
        offsets = self.offsets
        for first, last in _runs(indices):
            start = int(offsets[first])
            self._file.seek(start)
            block = self._file.read(int(offsets[last + 1]) - start)
            if len(block) != int(offsets[last + 1]) - start:
                raise DataError(f"{self.path}: clip file is truncated")
            for i in range(first, last + 1):
                found[i] = block[int(offsets[i]) - start : int(offsets[i + 1]) - start]
        return [found[i] for i in indices]

    def read_images(self, indices: Sequence[int]) -> list[np.ndarray]:
        """The given frames as RGB uint8 arrays (H, W, 3), each distinct frame decoded once."""
        cache: dict[int, np.ndarray] = {}
        for i, data in zip(indices, self.read_jpegs(indices), strict=True):
            if i not in cache:
                cache[i] = decode_jpeg(data)
        return [cache[i] for i in indices]


def decode_jpeg(data: bytes) -> np.ndarray:
    """A JPEG as an RGB uint8 array (H, W, 3)."""
    if simplejpeg is not None:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # e.g. a CMYK or otherwise unusual JPEG: let Pillow try
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
