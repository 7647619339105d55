"""Writing RGB frames as a video file: the one encoder of `stnet synth`, `stnet bench` and the tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from stnet.fileio import atomic_path

CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".mkv": "matroska",
    ".webm": "webm",
}


def encode_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    codec: str = "libx264",
    fps: int = 25,
    crf: int = 17,
    preset: str = "veryfast",
    keyframe_interval: int | None = None,
    bit_rate: int = 2_000_000,
    rotate: int = 0,
    hflip: bool = False,
) -> Path:
    """Write RGB uint8 frames (``(frames, H, W, 3)`` or a sequence of ``(H, W, 3)``, H and W even) to
    ``path`` atomically, in the container its suffix names (.mp4, .m4v, .mov, .avi, .mkv, .webm).

    ``codec="libx264"``: H.264 at quality ``crf`` with x264's ``preset`` and a keyframe at least every
    ``keyframe_interval`` frames (default x264's 250); ``codec="mpeg4"``: MPEG-4 part 2, UCF101's AVI
    codec, at ``bit_rate`` bits/s; ``codec="libvpx-vp9"`` (in ``.webm``, Something-Something V2's
    format): VP9 at constant quality ``crf``, libvpx's fastest real-time mode. ``rotate``/``hflip``
    record a display matrix, as phones do (MP4, MOV, MKV): players show the frames turned ``rotate``
    degrees counter-clockwise, then mirrored.

    The bytes depend on nothing but the frames and these settings: one encoder thread, frame timestamps
    set, x264's macroblock tree off (it is not repeatable on small frames), Matroska/WebM muxed
    bit-exact and the colour conversion done in numpy.
    """
    import av

    path = Path(path)
    video = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (frames, H, W, 3), not {video.dtype} {video.shape}")
    _, height, width, _ = video.shape
    if height % 2 or width % 2:
        raise ValueError(f"frame height and width must be even for 4:2:0 video, not {height}x{width}")
    container_format = CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"unknown video suffix {path.suffix!r}: use one of {', '.join(CONTAINERS)}")
    # Matroska/WebM write a random segment UID and the date unless told to be bit-exact
    muxer_options = {"fflags": "+bitexact"} if container_format in ("matroska", "webm") else {}
    with (
        atomic_path(path) as tmp,
        av.open(str(tmp), "w", format=container_format, options=muxer_options) as container,
    ):
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if rotate or hflip:
            stream.set_display_rotation(rotate, hflip=hflip)
        if codec == "libx264":
            options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
            if keyframe_interval is not None:
                options["g"] = str(keyframe_interval)
            stream.options = options
        elif codec == "libvpx-vp9":
            options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "threads": "1"}
            if keyframe_interval is not None:
                options["g"] = str(keyframe_interval)
            stream.options = options
        else:
            stream.bit_rate = bit_rate
            stream.codec_context.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = 1
        for index, image in enumerate(yuv420p(video)):
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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
