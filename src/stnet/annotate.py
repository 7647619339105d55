"""``stnet predict ... --out-video FILE.mp4|.gif``: a copy of the input with the top-k labels and
probability bars drawn on every frame, written through :class:`stnet.encode.VideoWriter`.

The labels of a frame are a function of its time (:data:`LabelsAt`): one prediction for the whole video,
or, with ``--timeline``, the window that stands for that moment (:func:`stnet.timeline.window_bounds`).
Only the panel in the top-left corner (:func:`panel_box`) is drawn on; the rest of each frame is the
input's, up to the encoder's loss.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stnet.errors import DataError, UserError

Labels = Sequence[tuple[str, float]]  # (class name, probability), best first
LabelsAt = Callable[[float], Labels]  # a frame's time in seconds -> what to draw on it
OUT_SUFFIXES = (".mp4", ".gif")
_PAD = 2
_BAR = 3  # probability bar height under each label, pixels


def font_size(height: int) -> int:
    """The label font's pixel size for frames ``height`` pixels tall: about 1/20 of it, at least 9."""
    return max(9, round(height / 20))


@lru_cache(maxsize=8)
def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


def panel_box(width: int, height: int, rows: int) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) rectangle, exclusive end, that the panel of ``rows`` labels covers."""
    size = font_size(height)
    row = size + _PAD + _BAR + _PAD
    return 0, 0, min(width, max(8 * size, width // 2)), min(height, _PAD + rows * row)


def draw_labels(image: np.ndarray, labels: Labels) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with ``labels`` drawn in :func:`panel_box`: a darkened box, each label's
    name and probability in white, and a bar as long as its probability."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = panel_box(width, height, len(labels))
    out = image.copy()
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    size = font_size(height)
    font = _font(size)
    row = size + _PAD + _BAR + _PAD
    for i, (name, prob) in enumerate(labels):
        top = y0 + _PAD + i * row
        draw.text((x0 + _PAD, top), f"{name} {prob:.2f}", fill=(255, 255, 255), font=font)
        bar_top = top + size + _PAD
        length = round((x1 - x0 - 2 * _PAD) * min(max(prob, 0.0), 1.0))
        draw.rectangle((x0 + _PAD, bar_top, x0 + _PAD + length, bar_top + _BAR - 1), fill=(80, 200, 80))
    return np.asarray(canvas)


def labels_of_windows(bounds: Sequence[tuple[float, float]], labels: Sequence[Labels]) -> LabelsAt:
    """Labels that follow a timeline: window i's from ``bounds[i][0]`` on."""
    starts = [start for start, _end in bounds]

    def at(t: float) -> Labels:
        return labels[max(0, bisect.bisect_right(starts, t) - 1)]

    return at


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 640x360) as (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--out-size takes WIDTHxHEIGHT, e.g. 640x360, not {text!r}") from None
    if width < 16 or height < 16:
        raise UserError(f"--out-size {text} is too small; use at least 16x16")
    return width, height


def check_out_video(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise UserError(f"--out-video must end in .mp4 (H.264) or .gif, not {path.name}")
    return path


def write_annotated(
    video: str | Path,
    out: str | Path,
    labels_at: LabelsAt,
    *,
    out_size: tuple[int, int] | None = None,
) -> int:
    """Decode ``video`` again, front to back, and write each frame (resized to ``out_size`` if given)
    with ``labels_at(its time)`` drawn on it to ``out`` (.mp4: H.264; .gif) at the input's frame rate;
    returns the number of frames written."""
    import av

    from stnet.encode import VideoWriter
    from stnet.timeline import DEFAULT_FPS, decoded_frames, stream_fps
    from stnet.video import open_video

    out = check_out_video(out)
    with open_video(video) as container:
        fps = stream_fps(container.streams.video[0]) or DEFAULT_FPS
        with VideoWriter(out, fps=Fraction(fps), crf=18) as writer:
            try:
                for index, image in enumerate(decoded_frames(container)):
                    if out_size is not None and image.size != out_size:
                        image = image.resize(out_size, Image.Resampling.BILINEAR)
                    frame = np.asarray(image)
                    if out.suffix.lower() == ".mp4" and (frame.shape[0] % 2 or frame.shape[1] % 2):
                        h, w = frame.shape[:2]
                        raise UserError(
                            f"H.264 needs an even frame size, not {w}x{h}: give --out-size or a .gif"
                        )
                    writer.write(draw_labels(frame, labels_at(float(index / fps))))
            except (av.error.FFmpegError, OSError) as e:
                if writer.frames == 0:
                    raise DataError(f"{video}: no decodable frames ({e})") from None
    return writer.frames
