"""``stnet predict SOURCE --live``: predictions on a live source as its frames arrive.

SOURCE is a file, an ``http(s)://``, ``rtsp://`` or ``rtmp://`` URL, a webcam (``/dev/videoN`` through
FFmpeg's v4l2 input, or ``--camera N``) or ``-`` for a stream on stdin (MPEG-TS, Matroska, ...).

A reader thread decodes the source and crops each frame as it comes into the rolling buffer of
:class:`stnet.timeline.Windower`, so the windows are those of ``predict --timeline`` on the same frames
(window k starts at frame ``k·stride``), and equal to them. Each completed window waits in a one-place
slot for the model; a window still waiting when the next one completes is dropped (counted as skipped),
so the model always runs on the latest window and the latency stays bounded when it is slower than the
source. The latency is measured from the arrival of a window's last frame to its answer.

``--smooth K`` and ``--threshold P`` act as ``--timeline``'s: an answer's probabilities are smoothed over
the K answers centred on it (:func:`stnet.timeline.smooth`), so it is given K//2 answers late, once
those after it are in (the last ones when the stream ends), and answers are merged into segments by
:class:`stnet.timeline.Segmenter`, each answer saying which segment it is in and which it started or
ended. Without skipped windows the answers and segments are those of ``--timeline`` on the same frames.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from stnet.errors import DataError
from stnet.runners import Runner
from stnet.timeline import (
    DEFAULT_THRESHOLD,
    ClipMaker,
    Segment,
    Segmenter,
    Window,
    Windower,
    WindowSize,
    classify,
    clock,
    decoded_frames,
    smooth,
    stream_fps,
)

URL_SCHEMES = ("http://", "https://", "rtsp://", "rtmp://")
OPEN_TIMEOUT_S = 10.0


def source_name(source: str | None, camera: int | None) -> str:
    """What SOURCE or ``--camera N`` names: ``-`` (stdin), a URL, a device or a file path."""
    if camera is not None:
        return f"/dev/video{camera}"
    if not source:
        raise DataError("give a SOURCE (file, URL, /dev/videoN or - for stdin) or --camera N")
    return source


def open_source(source: str, stdin: IO[bytes] | None = None) -> Any:
    """An open PyAV container for ``source`` with a video stream; DataError (one line) otherwise."""
    import av

    from stnet.video import open_video

    if not (source == "-" or source.startswith(URL_SCHEMES) or source.startswith("/dev/")):
        try:
            return open_video(source)
        except DataError as e:
            raise DataError(f"{source}: {e}") from None
    try:
        if source == "-":
            container = av.open(stdin or sys.stdin.buffer, mode="r")
        elif source.startswith("/dev/"):
            container = av.open(source, format="v4l2")
        else:
            options = {"rtsp_transport": "tcp"} if source.startswith("rtsp://") else {}
            container = av.open(source, options=options, timeout=OPEN_TIMEOUT_S)
    except (av.error.FFmpegError, OSError) as e:
        message = getattr(e, "strerror", None) or str(e)
        raise DataError(f"{source}: cannot open ({str(message).rstrip('.')})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{source}: no video stream")
    return container


def ended_text(segment: Segment) -> str:
    """A segment that ended, in a line: ``label ended (start-end, prob P, N windows)``."""
    plural = "s" if segment.windows > 1 else ""
    return (
        f"{segment.label} ended ({clock(segment.start)}-{clock(segment.end)}, prob {segment.prob:.3f}, "
        f"{segment.windows} window{plural})"
    )


@dataclass
class LivePrediction:
    window: Window  # its probs are the model's; ``probs`` and ``top`` are smoothed (--smooth)
    top: list[tuple[str, int, float]]
    latency_s: float
    skipped: int  # windows dropped since the previous prediction
    probs: np.ndarray | None = None  # smoothed probabilities (None: the window's own)
    segment: str | None = None  # the segment (--threshold) this window is in
    started: bool = False  # this window started it
    ended: Segment | None = None  # the segment this window ended

    def to_json(self) -> dict[str, Any]:
        return {
            "time": round(self.window.end, 3),
            "start": round(self.window.start, 3),
            "end": round(self.window.end, 3),
            "top": [{"class": name, "index": i, "prob": round(p, 6)} for name, i, p in self.top],
            "latency_ms": round(1000 * self.latency_s, 1),
            "skipped": self.skipped,
            "segment": self.segment,
            "started": self.started,
            "ended": self.ended.to_json() if self.ended else None,
        }

    def line(self) -> str:
        labels = ", ".join(f"{name} {p:.3f}" for name, _i, p in self.top)
        plural = "s" if self.skipped > 1 else ""
        skipped = f" (skipped {self.skipped} window{plural})" if self.skipped else ""
        events = [ended_text(self.ended)] if self.ended else []
        if self.started:
            events.append(f"{self.segment} started")
        changes = f"  | {'; '.join(events)}" if events else ""
        return f"{clock(self.window.end)}  {labels}  latency {1000 * self.latency_s:.0f} ms{skipped}{changes}"


@dataclass
class LiveSummary:
    source: str
    predictions: int = 0
    skipped: int = 0
    frames: int = 0
    stream_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error: str | None = None  # why the stream stopped, when it broke off
    interrupted: bool = False
    ended: Segment | None = None  # the segment still open when the stream ended, ended there

    def ended_json(self) -> dict[str, Any] | None:
        """The result line of :attr:`ended` in ``--json`` (None: no segment was open)."""
        return (
            None if self.ended is None else {"time": round(self.ended.end, 3), "ended": self.ended.to_json()}
        )

    def ended_line(self) -> str | None:
        """The result line of :attr:`ended` (None: no segment was open)."""
        return None if self.ended is None else f"{clock(self.ended.end)}  {ended_text(self.ended)}"

    def line(self) -> str:
        how = "interrupted" if self.interrupted else ("stream broke off" if self.error else "stream ended")
        lat = np.asarray(self.latencies) * 1000
        latency = f", latency mean {lat.mean():.0f} ms, max {lat.max():.0f} ms" if len(lat) else ""
        return (
            f"live {self.source}: {how} after {self.frames} frames ({clock(self.stream_s)}); "
            f"{self.predictions} predictions, skipped {self.skipped} windows{latency}"
        )


class _Slot:
    """The one window waiting for the model; a newer one replaces it (the older is skipped)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.item: tuple[int, list[Any], float] | None = None
        self.skipped = 0
        self.done = False
        self.stop = False
        self.frames = 0
        self.error: str | None = None

    def put(self, item: tuple[int, list[Any], float]) -> None:
        with self.cond:
            if self.item is not None:
                self.skipped += 1
            self.item = item
            self.cond.notify()

    def take(self) -> tuple[tuple[int, list[Any], float] | None, int]:
        """The waiting window (None once the source is done and nothing waits) and the skips before it."""
        with self.cond:
            while self.item is None and not self.done:
                self.cond.wait(0.1)
            item, skipped = self.item, self.skipped
            self.item, self.skipped = None, 0
            return item, skipped


@dataclass
class _Answer:
    window: Window
    arrived: float  # perf_counter() when the window's last frame arrived
    skipped: int


class _Smoother:
    """``--smooth k``: each answer's probabilities smoothed over the ``k`` answers centred on it, as
    :func:`stnet.timeline.smooth` smooths a timeline's windows, so an answer is ready once the ``k // 2``
    after it have come (:meth:`flush`: the rest, when no more come)."""

    def __init__(self, k: int, mode: str) -> None:
        self.k, self.mode = k, mode
        self.recent: collections.deque[np.ndarray] = collections.deque(maxlen=k)  # the last k answers'
        self.waiting: collections.deque[_Answer] = collections.deque()  # not given yet: the last of recent

    def add(self, answer: _Answer) -> list[tuple[_Answer, np.ndarray]]:
        self.recent.append(answer.window.probs)
        self.waiting.append(answer)
        return self._give(1) if len(self.waiting) > self.k // 2 else []

    def flush(self) -> list[tuple[_Answer, np.ndarray]]:
        return self._give(len(self.waiting))

    def _give(self, count: int) -> list[tuple[_Answer, np.ndarray]]:
        rows = smooth(np.stack(self.recent), self.k, self.mode) if self.recent else np.empty(0)
        first = len(self.recent) - len(self.waiting)
        return [(self.waiting.popleft(), rows[first + i]) for i in range(count)]


def _read(container: Any, maker: ClipMaker, windower: Windower, slot: _Slot) -> None:
    import av

    try:
        for image in decoded_frames(container):
            if slot.stop:
                break
            cut = windower.push(maker.crop(image))
            slot.frames = windower.count
            if cut is not None:
                slot.put((*cut, time.perf_counter()))
        else:
            tail = windower.tail()
            if tail is not None:
                slot.put((*tail, time.perf_counter()))
    except (av.error.FFmpegError, OSError) as e:
        message = getattr(e, "strerror", None) or str(e)
        slot.error = f"decoding stopped after {windower.count} frames ({str(message).rstrip('.')})"
    except BaseException as e:
        slot.error = f"{type(e).__name__}: {e}"
    finally:
        with slot.cond:
            slot.done = True
            slot.cond.notify()


def live(
    runner: Runner,
    source: str,
    emit: Callable[[LivePrediction], None],
    *,
    window_s: float | None = None,
    stride_s: float | None = None,
    topk: int = 5,
    clips: int = 1,
    crops: int = 1,
    threshold: float = DEFAULT_THRESHOLD,
    smoothing: int = 1,
    mode: str = "median",
    stdin: IO[bytes] | None = None,
) -> LiveSummary:
    """Predict on ``source`` until it ends or Ctrl-C (KeyboardInterrupt): ``emit`` gets each
    prediction as it is made (with ``smoothing`` K, K//2 answers late). Returns the summary (its
    ``error`` set when the stream broke off, its ``ended`` the segment open at the end; after Ctrl-C the
    answers still waiting for their smoothing are dropped)."""
    from stnet.inference import top_classes

    container = open_source(source, stdin)
    summary = LiveSummary(source)
    reader: threading.Thread | None = None
    try:
        size = WindowSize.resolve(runner.info, stream_fps(container.streams.video[0]), window_s, stride_s)
        maker = ClipMaker(runner.info, clips, crops)
        windower = Windower(size)
        slot = _Slot()
        reader = threading.Thread(target=_read, args=(container, maker, windower, slot), daemon=True)
        k = max(1, min(topk, runner.info.num_classes))
        names = runner.info.class_names
        smoother = _Smoother(smoothing, mode)
        segmenter = Segmenter(names, threshold)

        def give(ready: list[tuple[_Answer, np.ndarray]]) -> None:
            for answer, probs in ready:
                ended = segmenter.add(answer.window, probs)
                latency = time.perf_counter() - answer.arrived
                summary.predictions += 1
                summary.skipped += answer.skipped
                summary.latencies.append(latency)
                segment = names[segmenter.label] if segmenter.label >= 0 else None
                top = top_classes(probs, names, k)
                emit(
                    LivePrediction(
                        answer.window, top, latency, answer.skipped, probs, segment, segmenter.started, ended
                    )
                )

        reader.start()
        try:
            while True:
                item, skipped = slot.take()
                if item is None:
                    break
                first, window, arrived = item
                give(smoother.add(_Answer(classify(runner, maker, size, first, window), arrived, skipped)))
            give(smoother.flush())
            summary.ended = segmenter.finish(size.seconds(slot.frames))
        except KeyboardInterrupt:
            summary.interrupted = True
            slot.stop = True
        reader.join(timeout=2.0)
        summary.error = slot.error
        summary.frames = slot.frames
        summary.stream_s = size.seconds(slot.frames)
    finally:
        if reader is None or not reader.is_alive():  # else the reader thread still decodes from it
            container.close()
    return summary
