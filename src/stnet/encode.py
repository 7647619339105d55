"""Writing RGB frames as a video file: the one encoder of `stnet synth`, `stnet bench`, `stnet predict
--out-video` and the tests.

:class:`VideoWriter` takes frames one at a time (an annotated copy of a long video never holds it whole);
:func:`encode_video` writes a whole array through it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from stnet.fileio import atomic_path

CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".mkv": "matroska",
    ".webm": "webm",
    ".ts": "mpegts",
    ".gif": "gif",
}


class VideoWriter:
    """Encode RGB uint8 ``(H, W, 3)`` frames one by one (H and W even, except for GIF) into ``target``:
    a path, written atomically in the container its suffix names (.mp4, .m4v, .mov, .avi, .mkv, .ts,
    .gif), or a binary file object (a pipe: give ``container_format``, e.g. ``mpegts``).

    ``codec="libx264"``: H.264 at quality ``crf`` with x264's ``preset`` and a keyframe at least every
    ``keyframe_interval`` frames (default x264's 250); ``codec="mpeg4"``: MPEG-4 part 2, UCF101's AVI
    codec, at ``bit_rate`` bits/s; ``codec="libvpx-vp9"`` (in ``.webm``, Something-Something V2's
    format): VP9 at constant quality ``crf``, libvpx's fastest real-time mode. A ``.gif`` is always GIF
    (FFmpeg's encoder, 8-bit RGB palette).
    ``rotate``/``hflip`` record a display matrix, as phones do (MP4, MOV, MKV): players show the frames
    turned ``rotate`` degrees counter-clockwise, then mirrored. ``options`` go to the muxer (e.g.
    ``{"movflags": "frag_keyframe+empty_moov"}`` for an MP4 that can be streamed).

    The bytes depend on nothing but the frames and these settings: one encoder thread, frame timestamps
    set, x264's macroblock tree off (it is not repeatable on small frames), Matroska/WebM muxed
    bit-exact and the colour conversion done in numpy. Use it as a context manager: the file appears
    when the block ends without an error.
    """

    def __init__(
        self,
        target: str | os.PathLike | IO[bytes],
        *,
        codec: str = "libx264",
        fps: int | Fraction = 25,
        crf: int = 17,
        preset: str = "veryfast",
        keyframe_interval: int | None = None,
        bit_rate: int = 2_000_000,
        rotate: int = 0,
        hflip: bool = False,
        container_format: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        if isinstance(target, (str, os.PathLike)):
            path = Path(target)
            container_format = container_format or CONTAINERS.get(path.suffix.lower())
            if container_format is None:
                raise ValueError(f"unknown video suffix {path.suffix!r}: use one of {', '.join(CONTAINERS)}")
            self.path: Path | None = path
        elif container_format is None:
            raise ValueError("writing to a file object needs its container_format")
        else:
            self.path = None
        self._target = target
        self.format = container_format
        self.codec = "gif" if container_format == "gif" else codec
        self.fps = Fraction(fps)
        self.crf, self.preset, self.bit_rate = crf, preset, bit_rate
        self.keyframe_interval = keyframe_interval
        self.rotate, self.hflip = rotate, hflip
        # Matroska/WebM write a random segment UID and the date unless told to be bit-exact
        bitexact = {"fflags": "+bitexact"} if container_format in ("matroska", "webm") else {}
        self.options = {**bitexact, **(options or {})}
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        import av

        with self._stack as stack:
            target: Any = self._target
            if self.path is not None:
                target = str(stack.enter_context(atomic_path(self.path)))
            self._container = stack.enter_context(
                av.open(target, "w", format=self.format, options=self.options)
            )
            self._stack = stack.pop_all()
        return self

    def _open_stream(self, height: int, width: int) -> Any:
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width, height
        if self.codec == "gif":
            stream.pix_fmt = "rgb8"
            return stream
        if height % 2 or width % 2:
            raise ValueError(f"frame height and width must be even for 4:2:0 video, not {height}x{width}")
        stream.pix_fmt = "yuv420p"
        if self.rotate or self.hflip:
            stream.set_display_rotation(self.rotate, hflip=self.hflip)
        if self.codec == "libx264":
            options = {"crf": str(self.crf), "preset": self.preset, "threads": "1", "x264-params": "mbtree=0"}
            if self.keyframe_interval is not None:
                options["g"] = str(self.keyframe_interval)
            stream.options = options
        elif self.codec == "libvpx-vp9":
            options = {"crf": str(self.crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            options["threads"] = "1"
            if self.keyframe_interval is not None:
                options["g"] = str(self.keyframe_interval)
            stream.options = options
        else:
            stream.bit_rate = self.bit_rate
            stream.codec_context.time_base = 1 / self.fps
            stream.codec_context.thread_count = 1
        return stream

    def write(self, image: np.ndarray) -> None:
        """Append one RGB uint8 ``(H, W, 3)`` frame (every frame the size of the first)."""
        import av

        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"a frame must be uint8 (H, W, 3), not {image.dtype} {image.shape}")
        if self._stream is None:
            self._stream = self._open_stream(*image.shape[:2])
        if self.codec == "gif":
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        else:
            frame = av.VideoFrame.from_ndarray(yuv420p(image[None])[0], format="yuv420p")
        frame.pts = self.frames
        self.frames += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                if self._stream is None:
                    raise ValueError("no frames to write")
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())  # the temporary file goes
            raise
        self._stack.__exit__(kind, error, traceback)


def encode_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    **settings: Any,
) -> Path:
    """Write RGB uint8 frames (``(frames, H, W, 3)`` or a sequence of ``(H, W, 3)``, H and W even) to
    ``path`` atomically, in the container its suffix names; ``settings`` as :class:`VideoWriter`'s
    (codec, fps, crf, preset, keyframe_interval, bit_rate, rotate, hflip, options)."""
    video = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (frames, H, W, 3), not {video.dtype} {video.shape}")
    _, height, width, _ = video.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even for 4:2:0 video, not {height}x{width}")
    with VideoWriter(path, **settings) as writer:
        for image in video:
            writer.write(image)
    return Path(path)


def yuv420p(video: np.ndarray) -> np.ndarray:
    """RGB (frames, H, W, 3) → planar YUV 4:2:0 (frames, 3H/2, W), BT.601 limited range, as decoders assume.

    Done here rather than by FFmpeg's swscale so that the bytes depend on nothing but the pixels.
    """
    n, h, w, _ = video.shape
    r, g, b = (video[..., c].astype(np.float32) for c in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    r, g, b = (x.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4)) for x in (r, g, b))
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    planes = np.concatenate([x.reshape(n, -1) for x in (y, cb, cr)], axis=1)  # PyAV's packed layout
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8).reshape(n, h * 3 // 2, w)
