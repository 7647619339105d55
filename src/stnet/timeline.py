"""``stnet predict VIDEO --timeline``: a sliding window over a long video, classified window by window,
merged into segments (label, start, end, mean probability).

A window is ``L`` consecutive frames; one starts every ``stride`` frames. Each window is sampled and
cropped exactly as ``stnet predict`` samples a whole video of those ``L`` frames (the model's eval
recipe: :func:`stnet.sampling.frame_indices` over ``L`` frames, :func:`stnet.transforms.eval_plans`,
the same clips × crops views and :func:`stnet.inference.view_probabilities`), so a window's numbers
equal ``predict``'s on a file holding just those frames.

The video is decoded once, front to back: every frame is cropped to the model's input size as it
arrives and kept in a rolling buffer of the last ``L`` frames, so memory does not grow with the video's
length and no frame is decoded or resized twice. :class:`Windower` is that buffer, shared with
``--live`` (:mod:`stnet.live`), which therefore cuts the same windows from a stream.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stnet.datasets import ClipSpec
from stnet.errors import DataError, UserError
from stnet.inference import top_classes, view_probabilities
from stnet.runners import ModelInfo, Runner
from stnet.sampling import UCF_RATE, frame_indices
from stnet.transforms import CropPlan, apply_plan, eval_plans, to_clip_tensor

SMOOTHING = ("median", "mean")
DEFAULT_THRESHOLD = 0.5  # --threshold: the least (smoothed) probability of a window in a segment
DEFAULT_FPS = Fraction(25)  # for a stream that announces no frame rate


def default_window_frames(recipe: str, T: int, N: int) -> int:
    """The frames one clip of the model spans when every segment is one contiguous sampling window:
    T segments of N frames taken every other frame (``ucf101``, ``T·2N``) or of N consecutive frames
    (``kinetics400``, ``T·N``). The default ``--window`` is this many frames at the video's frame rate."""
    return T * N * (UCF_RATE if recipe == "ucf101" else 1)


@dataclass(frozen=True)
class WindowSize:
    """A window of ``frames`` frames every ``stride`` frames of a video at ``fps`` frames per second."""

    frames: int
    stride: int
    fps: Fraction

    @classmethod
    def resolve(
        cls, info: ModelInfo, fps: Fraction | None, window_s: float | None, stride_s: float | None
    ) -> WindowSize:
        """``--window``/``--stride`` (seconds; None: the defaults) in frames of a video at ``fps``."""
        rate = fps if fps else DEFAULT_FPS
        frames = (
            default_window_frames(info.recipe, info.T, info.N)
            if window_s is None
            else max(1, round(window_s * rate))
        )
        stride = max(1, round(frames / 2) if stride_s is None else round(stride_s * rate))
        return cls(frames, stride, rate)

    def seconds(self, frames: int) -> float:
        return float(frames / self.fps)


class ClipMaker:
    """Turns a window's frames into the model's input views as ``predict`` does for a whole video.

    :meth:`crop` is applied to each decoded frame once (the crop plans follow from the first frame's
    size); :meth:`views` samples a window of cropped frames: ``(views (D, T, 3N, S, S), weights (D,))``,
    the distinct clips × crops views in ``VideoClipDataset.distinct_views``' order and weights.
    """

    def __init__(self, info: ModelInfo, clips: int = 1, crops: int = 1) -> None:
        self.spec = ClipSpec.from_config(info.config())
        if crops == 10 and not self.spec.flip:
            raise DataError("10-crop testing adds mirrored crops, which flip: false rules out; use 3 crops")
        self.clips, self.crops = clips, crops
        self.plans: list[CropPlan] | None = None

    def crop(self, image: Any) -> list[np.ndarray]:
        """One frame (PIL image or uint8 array) as each crop plan turns it: a list of (S, S, 3) arrays."""
        if self.plans is None:
            s = self.spec
            size = (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size
            self.plans = eval_plans(
                size, s.short_size, s.target_size, self.crops, fixed_aspect=s.fixed_aspect
            )
        return [apply_plan([image], plan)[0] for plan in self.plans]

    def views(self, window: Sequence[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        s = self.spec
        clips = [
            tuple(frame_indices(s.recipe, len(window), s.T, s.N, train=False, clip=j, num_clips=self.clips))
            for j in range(self.clips)
        ]
        unique = list(dict.fromkeys(clips))
        plans = len(window[0])
        tensors = [
            to_clip_tensor(np.stack([window[i][p] for i in clip]), s.T, s.N, s.mean, s.std).numpy()
            for clip in unique
            for p in range(plans)
        ]
        weights = [clips.count(clip) for clip in unique for _ in range(plans)]
        return np.stack(tensors), np.asarray(weights, dtype=np.int64)


class Windower:
    """A rolling buffer of the last ``size.frames`` items; :meth:`push` returns ``(first, items)`` when a
    window ends at the item pushed (window k starts at frame ``k·stride``), else None. :meth:`tail` gives
    the last window after the final item: the whole video when it is shorter than one window, or the
    last ``frames`` frames when the regular windows stopped short of the end; else None."""

    def __init__(self, size: WindowSize) -> None:
        self.size = size
        self.buffer: collections.deque[Any] = collections.deque(maxlen=size.frames)
        self.count = 0
        self.last_end = 0  # end frame (exclusive) of the last window returned

    def push(self, item: Any) -> tuple[int, list[Any]] | None:
        self.buffer.append(item)
        self.count += 1
        first = self.count - self.size.frames
        if first >= 0 and first % self.size.stride == 0:
            self.last_end = self.count
            return first, list(self.buffer)
        return None

    def tail(self) -> tuple[int, list[Any]] | None:
        if self.count == 0 or self.last_end == self.count:
            return None
        self.last_end = self.count
        return self.count - len(self.buffer), list(self.buffer)


@dataclass
class Window:
    """One classified window: frames ``[first, first + frames)``, times in seconds, class probabilities."""

    first: int
    frames: int
    start: float
    end: float
    probs: np.ndarray

    def to_json(self, class_names: Sequence[str], k: int) -> dict[str, Any]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "first_frame": self.first,
            "frames": self.frames,
            "top": [
                {"class": name, "index": i, "prob": round(p, 6)}
                for name, i, p in top_classes(self.probs, class_names, k)
            ],
        }


@dataclass
class Segment:
    """A run of windows with the same (smoothed) top class at or above the threshold."""

    label: str
    index: int
    start: float
    end: float
    prob: float  # the mean of the class's (smoothed) window probabilities over the run
    windows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "prob": round(self.prob, 6),
            "windows": self.windows,
        }


@dataclass
class Timeline:
    video: Path
    size: WindowSize
    frames: int  # frames decoded
    windows: list[Window] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    warning: str | None = None  # decoding stopped early: the windows cover what decoded

    @property
    def duration(self) -> float:
        return self.size.seconds(self.frames)

    def to_json(self, class_names: Sequence[str], k: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "video": str(self.video),
            "fps": round(float(self.size.fps), 3),
            "frames": self.frames,
            "duration": round(self.duration, 3),
            "window": round(self.size.seconds(self.size.frames), 3),
            "stride": round(self.size.seconds(self.size.stride), 3),
            "windows": [w.to_json(class_names, k) for w in self.windows],
            "segments": [s.to_json() for s in self.segments],
        }
        if self.warning:
            out["warning"] = self.warning
        return out


def classify(runner: Runner, maker: ClipMaker, size: WindowSize, first: int, window: Sequence[Any]) -> Window:
    """The window of cropped frames ``window`` starting at frame ``first``, classified."""
    views, weights = maker.views(window)
    probs = view_probabilities(runner, views, weights)
    return Window(first, len(window), size.seconds(first), size.seconds(first + len(window)), probs)


def stream_fps(stream: Any) -> Fraction | None:
    """The frame rate a video stream announces (None when it announces none)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def decoded_frames(container: Any) -> Iterator[Any]:
    """The upright RGB frames of the first video stream, in order (:class:`stnet.video.Upright`)."""
    from stnet.video import Upright

    upright = Upright()
    try:
        for frame in container.decode(container.streams.video[0]):
            yield upright(frame)
    finally:
        upright.close()


def timeline(
    runner: Runner,
    video: str | Path,
    *,
    window_s: float | None = None,
    stride_s: float | None = None,
    clips: int = 1,
    crops: int = 1,
    on_window: Callable[[Window], None] | None = None,
) -> Timeline:
    """Classify every window of ``video`` (decoded once, front to back). Segments are left empty: see
    :func:`segments`. A decoding error after some frames ends the timeline there with ``warning`` set;
    one before any frame is a DataError."""
    import av

    from stnet.video import open_video

    video = Path(video)
    maker = ClipMaker(runner.info, clips, crops)
    with open_video(video) as container:
        size = WindowSize.resolve(runner.info, stream_fps(container.streams.video[0]), window_s, stride_s)
        result = Timeline(video, size, 0)
        windower = Windower(size)

        def add(cut: tuple[int, list[Any]] | None) -> None:
            if cut is not None:
                result.windows.append(classify(runner, maker, size, *cut))
                if on_window is not None:
                    on_window(result.windows[-1])

        try:
            for image in decoded_frames(container):
                add(windower.push(maker.crop(image)))
        except (av.error.FFmpegError, OSError) as e:
            if windower.count == 0:
                raise DataError(f"{video}: no decodable frames ({e})") from None
            result.warning = (
                f"{video}: decoding stopped after {windower.count} frames (truncated or corrupt?)"
            )
        if windower.count == 0:
            raise DataError(f"{video}: no decodable frames")
        add(windower.tail())
        result.frames = windower.count
    return result


# ----------------------------------------------------------------------------------------------------
# Windows → segments
# ----------------------------------------------------------------------------------------------------


def smooth(probs: np.ndarray, k: int, mode: str = "median") -> np.ndarray:
    """Each row of ``probs`` (windows, classes) replaced by the median or mean of the ``k`` rows centred
    on it (fewer at the ends); ``k = 1`` leaves them as they are."""
    if mode not in SMOOTHING:
        raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING)}, not {mode!r}")
    if k <= 1 or len(probs) < 2:
        return probs
    reduce = np.median if mode == "median" else np.mean
    before, after = (k - 1) // 2, k // 2
    return np.stack([reduce(probs[max(0, i - before) : i + after + 1], axis=0) for i in range(len(probs))])


def _centre(window: Window) -> float:
    return (window.start + window.end) / 2


def window_bounds(windows: Sequence[Window], duration: float) -> list[tuple[float, float]]:
    """The part of the video each window stands for: from the midpoint between its centre and the
    previous window's to the midpoint with the next one's (the first from 0, the last to the end), so
    overlapping windows split the time between them."""
    centres = [_centre(w) for w in windows]
    cuts = [0.0, *((a + b) / 2 for a, b in itertools.pairwise(centres)), duration]
    return list(itertools.pairwise(cuts))


def segment_class(probs: np.ndarray, threshold: float) -> int:
    """The class of the segment a window with (smoothed) probabilities ``probs`` belongs to: its top
    class when that reaches ``threshold``, else -1 (no segment)."""
    return int(np.argmax(probs)) if probs.max() >= threshold else -1


class Segmenter:
    """:func:`segments`' rule one window at a time, as ``--live`` needs it: :meth:`add` takes each
    window with its smoothed probabilities, in order, and returns the segment that window ends (None if
    none); :meth:`finish` ends the open one at the end of the video. ``label`` is the class of the open
    segment (-1: none) and ``started`` says whether the last window added started it."""

    def __init__(self, class_names: Sequence[str], threshold: float) -> None:
        self.class_names, self.threshold = class_names, threshold
        self.label = -1
        self.started = False
        self.previous: Window | None = None
        self.start = 0.0  # of the open segment
        self.probs: list[Any] = []  # its class's smoothed probability in each of its windows

    def add(self, window: Window, probs: np.ndarray) -> Segment | None:
        label = segment_class(probs, self.threshold)
        ended = None
        self.started = False
        if self.previous is None or label != self.label:
            cut = 0.0 if self.previous is None else (_centre(self.previous) + _centre(window)) / 2
            ended = self._close(cut)
            self.label, self.start, self.started = label, cut, label >= 0
        if label >= 0:
            self.probs.append(probs[label])
        self.previous = window
        return ended

    def finish(self, duration: float) -> Segment | None:
        """The open segment, ended at ``duration`` (None if none is open)."""
        ended = self._close(duration)
        self.label = -1
        return ended

    def _close(self, end: float) -> Segment | None:
        if self.label < 0:
            return None
        c, probs = self.label, self.probs
        self.probs = []
        return Segment(self.class_names[c], c, self.start, end, float(np.mean(probs)), len(probs))


def segments(
    windows: Sequence[Window],
    class_names: Sequence[str],
    duration: float,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    smoothing: int = 1,
    mode: str = "median",
) -> list[Segment]:
    """Consecutive windows whose smoothed top class is the same and reaches ``threshold``, merged; a
    window below the threshold belongs to no segment. A segment spans its windows' :func:`window_bounds`
    and its ``prob`` is the mean of its class's smoothed probabilities."""
    if not windows:
        return []
    smoothed = smooth(np.stack([w.probs for w in windows]), smoothing, mode)
    segmenter = Segmenter(class_names, threshold)
    out = [s for w, row in zip(windows, smoothed, strict=True) if (s := segmenter.add(w, row)) is not None]
    last = segmenter.finish(duration)
    return [*out, last] if last is not None else out


# ----------------------------------------------------------------------------------------------------
# Output: text, CSV
# ----------------------------------------------------------------------------------------------------


def clock(seconds: float, decimals: int = 1) -> str:
    """``mm:ss.s`` (``h:mm:ss.s`` from an hour on)."""
    seconds = max(0.0, seconds)
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    width = 3 + decimals if decimals else 2
    text = f"{minutes:02d}:{rest:0{width}.{decimals}f}"
    return f"{hours}:{text}" if hours else text


def table_lines(result: Timeline) -> list[str]:
    """The text report of one video: a header line, then one line per segment."""
    size = result.size
    head = (
        f"{result.video}: {result.frames} frames at {float(size.fps):g} fps ({clock(result.duration)}), "
        f"{len(result.windows)} windows of {size.seconds(size.frames):g} s every "
        f"{size.seconds(size.stride):g} s, {len(result.segments)} segments"
    )
    if not result.segments:
        return [head, "  (no window reaches the threshold)"]
    width = max(5, *(len(s.label) for s in result.segments))
    lines = [head, f"  {'start':>8}  {'end':>8}  {'label':<{width}}  {'prob':>5}  windows"]
    for s in result.segments:
        lines.append(
            f"  {clock(s.start):>8}  {clock(s.end):>8}  {s.label:<{width}}  {s.prob:5.3f}  {s.windows}"
        )
    return lines


CSV_HEADER = ("video", "kind", "start", "end", "rank", "class", "prob")


def csv_rows(result: Timeline, class_names: Sequence[str], k: int) -> Iterable[tuple[Any, ...]]:
    """Rows of ``--csv``: each window's top-k (kind ``window``, rank 1..k), then each segment."""
    for w in result.windows:
        for rank, (name, _i, p) in enumerate(top_classes(w.probs, class_names, k), 1):
            yield (result.video, "window", f"{w.start:.3f}", f"{w.end:.3f}", rank, name, f"{p:.6f}")
    for s in result.segments:
        yield (result.video, "segment", f"{s.start:.3f}", f"{s.end:.3f}", "", s.label, f"{s.prob:.6f}")


def write_csv(path: str | Path, rows: Iterable[tuple[Any, ...]]) -> None:
    import csv
    import io

    from stnet.fileio import atomic_write_bytes

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def check_one_video(videos: Sequence[Path], flag: str) -> Path:
    if len(videos) != 1:
        raise UserError(f"{flag} draws one video; give one video file, not {len(videos)}")
    return videos[0]
