"""Which frames a clip is made of: pure functions of the video length, the config and an RNG.

Every function returns ``T·N`` frame indices in segment-major order (segment t holds positions
``t·N … t·N+N−1``), each in ``[0, num_frames)``. Train sampling draws from the given ``random.Random``;
eval sampling is deterministic. ``clip``/``num_clips`` pick one of K evenly spaced temporal views for
multi-view testing; ``num_clips=1`` is the single centred clip of plain evaluation.

Two recipes, as the reference's loaders (Kinetics ``video_loader``, UCF101 ``UcfVideoDataset``):

* **kinetics400** (TSN): ``avg = L // T``; segment i starts at ``i·avg`` plus a random offset in
  ``[0, avg−N]`` (train) or ``(avg−N)//2`` (eval) when ``avg ≥ N``, at ``i·avg`` when ``1 ≤ avg < N``, at
  ``i`` when ``avg = 0``; it holds N consecutive frames, each index taken modulo L.
* **ucf101** (the MindSpore GPU recipe): ``seg_len = L // T``; when ``seg_len > 2N`` a 2N-frame window
  ends at a random ``end`` in ``[2N, seg_len−1]`` (train) and the frames are N points of
  ``linspace(start, end)`` clipped to ``end−1`` and truncated (N=5: start + {0,2,5,7,9}); when
  ``1 ≤ seg_len ≤ 2N`` the offsets are ``seg_len//2`` points of ``linspace(0, seg_len)`` padded with
  ``seg_len`` to N and clipped to ``seg_len−1`` (seg_len 7: {0,3,6,6,6}). The reference turns
  ``seg_len = 0`` (videos shorter than T frames) into index −1; here segment i is then frame
  ``i·L // T`` repeated N times. The reference also samples its val split at random; here eval
  windows are centred (the middle of the train range).

The recipes count *source* frames. A store prepared at a lower rate (``prepare --fps``/``--max-frames``)
keeps only some of them and records which (:class:`Timeline`): the indices are drawn on the source's
frames and each is read from the stored frame nearest to it in time, so a clip spans the same seconds
whatever rate the store was written at.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable

import numpy as np

from stnet.errors import DataError

RECIPES = ("ucf101", "kinetics400")
UCF_RATE = 2  # the UCF recipe's frame_sample_rate: an N-frame clip spans a 2N-frame window


def source_index(stored: int, fps: float, source_fps: float) -> int:
    """The source frame kept as stored frame ``stored`` when a ``source_fps`` video is stored at ``fps``:
    the one nearest to the time ``stored / fps``."""
    return math.floor(stored * source_fps / fps + 0.5)


@dataclasses.dataclass(frozen=True)
class Timeline:
    """``frames`` stored frames at ``fps`` of a video of ``source_frames`` frames at ``source_fps``.

    Stored frame j is source frame :func:`source_index` ``(j)``. Without a known rate (0), or when every
    frame is stored, the two coincide.
    """

    frames: int
    fps: float = 0.0
    source_frames: int = 0
    source_fps: float = 0.0

    @property
    def resampled(self) -> bool:
        """Whether only some of the source's frames are stored."""
        return (
            self.fps > 0
            and self.source_fps > 0
            and self.source_frames > self.frames
            and not math.isclose(self.fps, self.source_fps)
        )

    @property
    def sampled_frames(self) -> int:
        """The frame count the recipes sample from: the source's."""
        return self.source_frames if self.resampled else self.frames

    def to_stored(self, indices: Iterable[int]) -> list[int]:
        """Source frame indices → the stored frames nearest to them in time."""
        if not self.resampled:
            return list(indices)
        ratio = self.fps / self.source_fps
        return [min(self.frames - 1, math.floor(i * ratio + 0.5)) for i in indices]


def _check(
    num_frames: int, T: int, N: int, clip: int, num_clips: int, train: bool, rng: random.Random | None
) -> None:
    if train and rng is None:
        raise ValueError("train sampling needs an rng")
    if num_frames < 1:
        raise DataError("the video has no frames")
    if T < 1 or N < 1:
        raise ValueError(f"T and N must be >= 1, got T={T}, N={N}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} is not in [0, {num_clips})")


def _eval_offset(span: int, clip: int, num_clips: int) -> int:
    """Offset of temporal view ``clip`` of ``num_clips`` spread over ``[0, span]``; K=1 gives span//2."""
    return span * (2 * clip + 1) // (2 * num_clips)


def kinetics_indices(
    num_frames: int,
    T: int,
    N: int,
    *,
    train: bool,
    rng: random.Random | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """TSN segment sampling of the reference Kinetics loader (``video_loader``), with views for testing."""
    _check(num_frames, T, N, clip, num_clips, train, rng)
    avg = num_frames // T
    out: list[int] = []
    for i in range(T):
        if avg >= N:
            offset = rng.randint(0, avg - N) if train else _eval_offset(avg - N, clip, num_clips)  # type: ignore[union-attr]
            start = offset + i * avg
        elif avg >= 1:
            start = i * avg
        else:
            start = i
        out.extend((start + k) % num_frames for k in range(N))
    return out


def _ucf_short_offsets(seg_len: int, N: int) -> list[int]:
    """The reference's deterministic offsets inside a segment of 1..2N frames."""
    points = np.linspace(0, seg_len, num=seg_len // UCF_RATE)
    points = np.concatenate((points, np.full(N - len(points), float(seg_len))))
    return np.clip(points, 0, seg_len - 1).astype(np.int64).tolist()


def _ucf_window_offsets(start: int, N: int) -> list[int]:
    """N points of linspace(start, start + 2N) clipped to the window's last frame, truncated."""
    end = start + UCF_RATE * N
    return np.clip(np.linspace(start, end, num=N), start, end - 1).astype(np.int64).tolist()


def ucf_indices(
    num_frames: int,
    T: int,
    N: int,
    *,
    train: bool,
    rng: random.Random | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """The reference UCF101 sampling (``loadvideo_decord``) without its −1 index, with eval views."""
    _check(num_frames, T, N, clip, num_clips, train, rng)
    seg_len = num_frames // T
    window = UCF_RATE * N
    out: list[int] = []
    for i in range(T):
        if seg_len == 0:
            out.extend([i * num_frames // T] * N)
            continue
        if seg_len > window:
            span = seg_len - 1 - window  # starts in [0, span]: end = start + window in [window, seg_len-1]
            start = rng.randint(0, span) if train else _eval_offset(span, clip, num_clips)  # type: ignore[union-attr]
            offsets = _ucf_window_offsets(start, N)
        else:
            offsets = _ucf_short_offsets(seg_len, N)
        out.extend(o + i * seg_len for o in offsets)
    return out


def frame_indices(
    recipe: str,
    num_frames: int,
    T: int,
    N: int,
    *,
    train: bool,
    rng: random.Random | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """The T·N frame indices of one clip under ``recipe`` (``ucf101`` or ``kinetics400``)."""
    if recipe == "kinetics400":
        return kinetics_indices(num_frames, T, N, train=train, rng=rng, clip=clip, num_clips=num_clips)
    if recipe == "ucf101":
        return ucf_indices(num_frames, T, N, train=train, rng=rng, clip=clip, num_clips=num_clips)
    raise ValueError(f"unknown dataset recipe {recipe!r}; use one of {', '.join(RECIPES)}")
