"""Decoding video files with PyAV: every frame in order (for ``stnet prepare``) or a chosen few (training).

Frame counts stored in container headers are not trusted (AVI headers often lie): a video has as many
frames as the decoder returns. Frames come out upright: the display matrix that phones record in
MP4/MOV/MKV files instead of rotating the pixels is applied to every frame, as players do
(:class:`Upright`). Every failure is a :class:`DataError` whose message says what is wrong with the
file in words a user can act on ("empty file", "no video stream", ...).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from stnet.errors import DataError

VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts"}
)


def check_readable(path: str | os.PathLike) -> None:
    """Raise DataError unless ``path`` is a non-empty file this process may read.

    Done in Python before FFmpeg sees the file so that the reason is precise ("permission denied"
    rather than FFmpeg's generic "invalid data").
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except FileNotFoundError:
        raise DataError("file not found") from None
    except IsADirectoryError:
        raise DataError("is a directory, not a video file") from None
    except PermissionError:
        raise DataError("permission denied") from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}") from None
    if not head:
        raise DataError("empty file (0 bytes)")


# The display matrix's rotation/flip part [[a, b], [c, d]] (signs) maps a pixel (x, y) of the decoded
# frame, y down, to (a·x + c·y, b·x + d·y) on screen; each of the 8 right-angle cases is one PIL transpose.
_ORIENTATIONS: dict[tuple[int, int, int, int], Image.Transpose | None] = {
    (1, 0, 0, 1): None,
    (-1, 0, 0, 1): Image.Transpose.FLIP_LEFT_RIGHT,
    (1, 0, 0, -1): Image.Transpose.FLIP_TOP_BOTTOM,
    (-1, 0, 0, -1): Image.Transpose.ROTATE_180,
    (0, -1, 1, 0): Image.Transpose.ROTATE_90,  # counter-clockwise, as av_display_rotation_get says
    (0, 1, -1, 0): Image.Transpose.ROTATE_270,
    (0, 1, 1, 0): Image.Transpose.TRANSPOSE,
    (0, -1, -1, 0): Image.Transpose.TRANSVERSE,
}


def display_transpose(frame: av.VideoFrame) -> Image.Transpose | None:
    """The transpose that shows ``frame`` as its display matrix says (None: as decoded).

    The matrix is FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX`` side data (9 int32, 16.16 fixed point), which
    FFmpeg attaches to every frame of a stream whose container records one (the MP4/MOV ``tkhd`` matrix,
    MKV projection). Rotations by other than a multiple of 90° are left as decoded.
    """
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None:
        return None
    m = np.frombuffer(bytes(side), dtype=np.int32)
    a, b, c, d = (int(np.sign(v)) if abs(v) > 0x8000 else 0 for v in (m[0], m[1], m[3], m[4]))
    return _ORIENTATIONS.get((a, b, c, d))


class Upright:
    """Turns the frames of one video stream upright: its display matrix, read from the first frame.

    ``frame.rotation`` reads the matrix in C; only a rotated stream's first frame is looked at through
    ``frame.side_data`` (for the mirroring, which the angle alone does not tell). That PyAV object is a
    reference cycle (frame <-> side-data container) holding the frame's FFmpeg buffers, so :meth:`close`
    collects it at once: left for later, DataLoader workers forked meanwhile hung. A matrix that only
    mirrors top-bottom (rotation 0; no camera writes one) is not applied.
    """

    def __init__(self) -> None:
        self._turn: Image.Transpose | None = None
        self._known = False
        self._looked = False

    def __call__(self, frame: av.VideoFrame) -> Image.Image:
        if not self._known:
            self._known = True
            if frame.rotation:
                self._looked = True
                self._turn = display_transpose(frame)
        image = frame.to_image()
        return image if self._turn is None else image.transpose(self._turn)

    def close(self) -> None:
        if self._looked:
            self._looked = False
            gc.collect()


def _ffmpeg_message(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return str(text).rstrip(".")


def open_video(path: str | os.PathLike, *, threads: bool = False) -> av.container.InputContainer:
    """Open ``path`` for decoding its first video stream; DataError if it is not a usable video file.

    FFmpeg's own decoder threads are off by default: ``prepare`` and the DataLoader already run one
    decoder per process, and on a busy machine extra threads cost more wall time than they save.
    """
    check_readable(path)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.PermissionError:
        raise DataError("permission denied") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"not a readable video (truncated or not a video: {_ffmpeg_message(e)})") from None
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise DataError(f"no video stream (streams: {kinds})")
    if threads:
        container.streams.video[0].thread_type = "AUTO"
    return container


def iter_frames(path: str | os.PathLike, keep: Callable[[int], bool] | None = None) -> Iterator[Image.Image]:
    """Every frame of the first video stream, in decoding order, as RGB PIL images.

    With ``keep``, it is called with the index of every decoded frame, in order, and only the frames
    it accepts are converted and yielded (the others are decoded, as they must be, but not converted).
    A decode error raises DataError naming how many frames came before it (a truncated or corrupt
    file); a stream that yields no frame at all raises DataError("no decodable frames").
    """
    container = open_video(path)
    upright = Upright()
    count = 0
    try:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                count += 1
                if keep is None or keep(count - 1):
                    yield upright(frame)
        except (av.error.FFmpegError, OSError) as e:
            what = (
                f"truncated or corrupt: decoding failed after {count} frames"
                if count
                else "no decodable frames"
            )
            raise DataError(f"{what} ({_ffmpeg_message(e)})") from None
    finally:
        frame = None  # released before the collection
        container.close()
        upright.close()
    if count == 0:
        raise DataError("no decodable frames")


def count_packets(path: str | os.PathLike) -> int:
    """The number of non-empty video packets: a cheap frame-count estimate that needs no decoding."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except (av.error.FFmpegError, OSError) as e:
            raise DataError(f"truncated or corrupt ({_ffmpeg_message(e)})") from None


def read_frames(path: str | os.PathLike, indices: Iterable[int]) -> tuple[dict[int, Image.Image], int | None]:
    """Decode ``path`` from the start up to the largest wanted index; keep only the wanted frames.

    Returns ``(frames, total)``: the wanted frames by index (RGB PIL images), and the true frame count
    when the video ended before the largest wanted index (else None), so the caller can resample.
    Sequential decoding is exact in frame order; seeking would be faster on long H.264 GOPs but maps
    timestamps to indices unreliably.
    """
    wanted = set(indices)
    if not wanted:
        return {}, None
    last = max(wanted)
    out: dict[int, Image.Image] = {}
    upright = Upright()
    index = -1
    try:
        with open_video(path) as container:
            try:
                for index, frame in enumerate(container.decode(container.streams.video[0])):
                    if index in wanted:
                        out[index] = upright(frame)
                        if index == last:
                            return out, None
            except (av.error.FFmpegError, OSError) as e:
                if index < 0:
                    raise DataError(f"no decodable frames ({_ffmpeg_message(e)})") from None
    finally:
        frame = None  # released before the collection
        upright.close()
    if index < 0:
        raise DataError("no decodable frames")
    return out, index + 1


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a known video file suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
