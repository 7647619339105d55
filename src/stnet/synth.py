"""``stnet synth``: a synthetic action dataset that only temporal modelling can solve.

Every video shows one main object on a textured, noisy background with 1–3 small distractors. The eight
classes differ *only* in how the main object moves: it translates left, right, up or down, grows or
shrinks, or moves right then left / left then right (turning at the middle of the clip, so telling
those two apart needs the order of events across the whole clip, not a few adjacent frames).

**No single frame carries label information.** For every frame index t, the distribution of frame t is
the same for every class, by construction:

* Positions live on a torus (the object is drawn with wrap-around) and every trajectory is
  ``x(t) = x0 + D(t) mod size`` with a uniformly random start ``x0`` independent of the class-specific
  displacement ``D(t)``. A uniform variable plus any independent shift is uniform on the torus, so the
  position at every t is uniform for every class (translations, turns, and the still centre of the
  size-changing classes alike).
* The object's size lives on a "log-size torus": ``log s(t) = log s_min + (φ + r·t mod L)`` with
  ``L = log(s_max / s_min)``, a uniform phase φ and a class-specific rate r (positive: grows, negative:
  shrinks, zero: every translating class). The same argument makes ``log s(t)`` uniform on
  ``[log s_min, log s_max)`` at every t for every class: a growing object that reaches ``s_max`` starts
  again at ``s_min``. Position and size are independent, so their joint law is class-free too.
* Everything else (shape, orientation, colour, background texture and colour, noise level, per-frame
  noise and flicker, the distractors' look and random-walk motion, the speeds) is drawn from one
  distribution shared by all classes, independently of the class, and all random draws are made in
  the same order for every class. The class only decides the signs of the displacement and log-size
  rate.

Motion stays clearly visible locally: translations move 1–2.5 px per frame at 64 px (scaled with the
frame size), sizes change 2.5–4 % per frame, so 3–5 consecutive frames show the direction. The main
object is always brighter than the background (any hue): with a random contrast polarity, which way an
object moved is a much harder function of the pixels, and StNet-R18 trained from scratch on a CPU
budget stayed at chance even on a flat background; with a fixed polarity it learns all eight classes.

Train with ``--flip false``: a horizontal flip turns ``moves_left`` into ``moves_right`` (and
``right_then_left`` into ``left_then_right``), so flip augmentation would corrupt those labels.

:func:`synthesize` renders the videos (``np.random.default_rng([seed, class, index])`` per video, so
the result does not depend on the number of worker processes), encodes them as H.264 MP4 and writes the
annotation lists ``train.txt``/``val.txt``/``test.txt`` and ``classes.txt`` that ``stnet prepare list``
reads, plus ``synth.json``. With ``boxes=True`` it also writes ``boxes.json``: the main object's bounding
box in every frame of every video (:func:`object_boxes`), the ground truth of ``stnet explain``'s
pointing game.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stnet.argtypes import MAX_SEED, int_arg, workers_arg
from stnet.encode import encode_video
from stnet.errors import DataError
from stnet.fileio import atomic_write_bytes

__all__ = [
    "BOXES_JSON",
    "MOTIONS",
    "Scene",
    "Sprite",
    "SynthReport",
    "box_mask",
    "cmd_synth",
    "crf_for",
    "draw_scene",
    "object_boxes",
    "prepare_command",
    "read_boxes",
    "register_cli",
    "render_video",
    "sample_scene",
    "synthesize",
    "video_boxes",
]

MOTIONS: tuple[str, ...] = (
    "moves_left",
    "moves_right",
    "moves_up",
    "moves_down",
    "grows",
    "shrinks",
    "right_then_left",
    "left_then_right",
)
SHAPES: tuple[str, ...] = ("circle", "square", "diamond", "triangle", "ring", "cross")
GENERATOR = "stnet.synth"
VERSION = 1  # bump when the rendering changes: a rerun into an older output is refused
FPS = 25
CRF = 17  # x264 quality at >= 64 px: a 1-2 px shift of a small object survives it
CRF_SMALL = 12  # below 64 px objects move < 1 px per frame: at 17, x264 merges some frames into one
SPEED = (1.0, 2.5)  # main-object speed, pixels per frame at 64 px
RATE = (0.025, 0.04)  # main-object log-size change per frame
SIZE = (0.14, 0.42)  # main-object diameter as a fraction of the frame: s_min, s_max
# The main object is brighter than the background in every channel (a bright ball on a dark court);
# see the module docstring for why the polarity is fixed.
BACKGROUND_LEVEL = (20.0, 110.0)  # mean colour of the background, per channel
OBJECT_LEVEL = (160.0, 255.0)  # colour of the main object, per channel
BACKGROUND_CONTRAST = (15.0, 40.0)  # standard deviation of the background texture, grey levels
NOISE = (2.0, 7.0)  # standard deviation of the per-frame pixel noise, grey levels
DISTRACTORS = (1, 3)
DISTRACTOR_SIZE = (0.05, 0.09)
DISTRACTOR_SPEED = 0.8  # stationary RMS speed per axis of the distractors' random walk, px/frame at 64 px
DISTRACTOR_PERSISTENCE = 0.85  # AR(1) coefficient of a distractor's velocity
MIN_SIZE, MIN_FRAMES = 32, 16
SYNTH_JSON = "synth.json"
BOXES_JSON = "boxes.json"
VIDEOS = "videos"


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sprite:
    """One object: its shape, orientation, colour and per-frame centre (x, y) and radius, in pixels."""

    shape: str
    angle: float
    colour: np.ndarray  # (3,) float32 RGB in 0..255
    centre: np.ndarray  # (frames, 2) float: x, y; taken modulo the frame size when drawn
    radius: np.ndarray  # (frames,) float


@dataclass(frozen=True)
class Scene:
    """Everything about one video except its per-frame noise: background, main object, distractors."""

    motion: str
    size: int
    frames: int
    background: np.ndarray  # (size, size, 3) float32
    noise: float  # standard deviation of the per-frame pixel noise
    flicker: np.ndarray  # (frames,) global brightness gain per frame
    main: Sprite
    distractors: list[Sprite] = field(default_factory=list)


def _check_motion(motion: str) -> int:
    if motion not in MOTIONS:
        raise DataError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    return MOTIONS.index(motion)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth periodic random field per colour channel, (size, size, 3), unit standard deviation."""
    freq = np.fft.fftfreq(size)
    f2 = freq[:, None] ** 2 + freq[None, :] ** 2
    cutoff = rng.uniform(1.5, 4.0) / size  # a few blobs across the frame
    spectrum = np.exp(-f2 / (2 * cutoff**2))
    noise = rng.standard_normal((3, size, size)) + 1j * rng.standard_normal((3, size, size))
    field_ = np.fft.ifft2(noise * spectrum, axes=(1, 2)).real
    field_ /= field_.std(axis=(1, 2), keepdims=True) + 1e-8
    return field_.transpose(1, 2, 0).astype(np.float32)


def _main_path(
    motion: str, rng: np.random.Generator, size: int, frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (frames, 2) and radius (frames,) of the main object; uniform start, class-specific motion.

    Every class draws the same random numbers in the same order; ``motion`` only picks the signs.
    """
    t = np.arange(frames, dtype=np.float64)
    start = rng.uniform(0, size, 2)
    speed = rng.uniform(*SPEED) * size / 64
    tilt = rng.uniform(-0.15, 0.15)  # the direction of travel deviates a little from the axis
    rate = rng.uniform(*RATE)
    phase = rng.uniform(0, 1)  # position on the log-size torus, as a fraction of its length
    along = {
        "moves_left": (-1, 0),
        "moves_right": (1, 0),
        "moves_up": (0, -1),
        "moves_down": (0, 1),
        "right_then_left": (1, 0),
        "left_then_right": (-1, 0),
    }.get(motion, (0, 0))
    middle = (frames - 1) / 2
    travel = middle - np.abs(t - middle) if "_then_" in motion else t  # out, then back at mid-clip
    ux, uy = along
    direction = np.array(
        [ux * math.cos(tilt) - uy * math.sin(tilt), ux * math.sin(tilt) + uy * math.cos(tilt)]
    )
    centre = start + speed * travel[:, None] * direction[None, :]
    low, high = math.log(SIZE[0] * size / 2), math.log(SIZE[1] * size / 2)
    span = high - low
    signed_rate = {"grows": rate, "shrinks": -rate}.get(motion, 0.0)
    radius = np.exp(low + np.mod(phase * span + signed_rate * t, span))
    return centre, radius


def _distractor(rng: np.random.Generator, size: int, frames: int) -> Sprite:
    """A small object doing a persistent random walk from a uniform start (its law is class-free)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    angle = rng.uniform(0, 2 * math.pi)
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    radius = np.full(frames, rng.uniform(*DISTRACTOR_SIZE) * size / 2)
    a = DISTRACTOR_PERSISTENCE
    sigma = DISTRACTOR_SPEED * size / 64
    shocks = rng.standard_normal((frames, 2)) * sigma * math.sqrt(1 - a * a)
    velocity = np.empty((frames, 2))
    velocity[0] = rng.standard_normal(2) * sigma  # the stationary law, so no frame index is special
    for i in range(1, frames):
        velocity[i] = a * velocity[i - 1] + shocks[i]
    start = rng.uniform(0, size, 2)
    centre = start + np.cumsum(velocity, axis=0) - velocity[0]
    return Sprite(shape, angle, colour, centre, radius)


def sample_scene(motion: str, rng: np.random.Generator, size: int = 64, frames: int = 48) -> Scene:
    """Draw everything random about one video of class ``motion`` except the per-frame pixel noise."""
    _check_motion(motion)
    base = rng.uniform(*BACKGROUND_LEVEL, 3)
    contrast = rng.uniform(*BACKGROUND_CONTRAST)
    background = (base + contrast * _texture(rng, size)).astype(np.float32)
    noise = float(rng.uniform(*NOISE))
    flicker = (1 + 0.02 * rng.standard_normal(frames)).astype(np.float32)
    shape = SHAPES[rng.integers(len(SHAPES))]
    angle = rng.uniform(0, 2 * math.pi)
    colour = rng.uniform(*OBJECT_LEVEL, 3).astype(np.float32)
    centre, radius = _main_path(motion, rng, size, frames)
    distractors = [
        _distractor(rng, size, frames) for _ in range(int(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)))
    ]
    main = Sprite(shape, angle, colour, centre, radius)
    return Scene(motion, size, frames, background, noise, flicker, main, distractors)


def _distance(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) of ``shape`` of radius ``r`` at (u, v)."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.2 * r) / math.sqrt(2)
    if shape == "triangle":
        edges = [u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
        return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 0.6 * r
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.72 * r) - 0.28 * r
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - r, av - 0.38 * r), np.maximum(au - 0.38 * r, av - r))
    raise ValueError(f"unknown shape {shape!r}")


EXTENT = 1.2  # every shape lies within EXTENT · radius of its centre


def _patch(sprite: Sprite, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased coverage of ``sprite`` in the square around it in each frame, wrapping around.

    Returns ``(alpha, rows, cols)``: alpha (frames, K, K) and the pixel rows and columns (frames, K) it
    covers, taken modulo the frame size (the frame is a torus); K < size, so no pixel appears twice.
    """
    k = min(math.ceil(EXTENT * float(sprite.radius.max()) + 1.5), (size - 1) // 2)
    offsets = np.arange(-k, k + 1)
    cx, cy = sprite.centre[:, 0], sprite.centre[:, 1]
    cols = np.floor(cx).astype(np.int64)[:, None] + offsets  # unwrapped pixel columns around the centre
    rows = np.floor(cy).astype(np.int64)[:, None] + offsets
    dx = (cols + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
    dy = (rows + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]
    cos, sin = math.cos(sprite.angle), math.sin(sprite.angle)
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    r = sprite.radius.astype(np.float32)[:, None, None]
    alpha = np.clip(0.5 - _distance(sprite.shape, u, v, r), 0, 1)
    return alpha, np.mod(rows, size), np.mod(cols, size)


def draw_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Render ``scene`` with per-frame noise from ``rng``: uint8 (frames, size, size, 3) RGB."""
    video = np.broadcast_to(scene.background, (scene.frames, *scene.background.shape)).copy()
    index = np.arange(scene.frames)[:, None, None]
    for sprite in [*scene.distractors, scene.main]:  # the main object is in front
        alpha, rows, cols = _patch(sprite, scene.size)
        where = (index, rows[:, :, None], cols[:, None, :])
        region = video[where]
        video[where] = region + alpha[..., None] * (sprite.colour - region)
    video *= scene.flicker[:, None, None, None]
    video += rng.standard_normal(video.shape, dtype=np.float32) * scene.noise
    return np.clip(video + 0.5, 0, 255).astype(np.uint8)


def render_video(motion: str, rng: np.random.Generator, size: int = 64, frames: int = 48) -> np.ndarray:
    """One video of class ``motion``: uint8 (frames, size, size, 3) RGB; see the module docstring."""
    _check_args(size=size, frames=frames)
    return draw_scene(sample_scene(motion, rng, size, frames), rng)


def object_boxes(scene: Scene) -> np.ndarray:
    """The main object's bounding box in every frame: int (frames, 4) ``x0, y0, x1, y1`` in pixels, x1
    and y1 exclusive, tight around the pixels it covers (anti-aliased edges included).

    The frame is a torus (see the module docstring): the box's centre lies in the frame, and a box that
    crosses an edge runs past it (x0 < 0 or x1 > size) and continues on the other side;
    :func:`box_mask` draws it so.
    """
    alpha, _, _ = _patch(scene.main, scene.size)
    k = (alpha.shape[1] - 1) // 2
    covered_cols, covered_rows = alpha.max(axis=1) > 0, alpha.max(axis=2) > 0  # (frames, K) each
    boxes = np.empty((scene.frames, 4), np.int64)
    for axis, covered in ((0, covered_cols), (1, covered_rows)):
        first = covered.argmax(axis=1)
        last = covered.shape[1] - 1 - covered[:, ::-1].argmax(axis=1)
        origin = np.floor(scene.main.centre[:, axis]).astype(np.int64) - k  # unwrapped pixel of offset 0
        low, high = origin + first, origin + last + 1
        shift = np.floor_divide(low + high, 2 * scene.size) * scene.size  # centre back into the frame
        boxes[:, axis], boxes[:, axis + 2] = low - shift, high - shift
    return boxes


def box_mask(box: Sequence[int], size: int) -> np.ndarray:
    """Boolean (size, size) mask of one :func:`object_boxes` box on the ``size``-pixel torus."""
    x0, y0, x1, y1 = (int(v) for v in box)
    cols = np.zeros(size, bool)
    rows = np.zeros(size, bool)
    cols[np.arange(x0, x1) % size] = True
    rows[np.arange(y0, y1) % size] = True
    return rows[:, None] & cols[None, :]


def read_boxes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The boxes of a ``boxes.json``: video path relative to the synth folder → int (frames, 4)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {rel: np.asarray(b, np.int64).reshape(-1, 4) for rel, b in data["videos"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path} is not a synth boxes file ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------------
# Encoding and writing a dataset
# ----------------------------------------------------------------------------------------------------


def crf_for(size: int) -> int:
    """The x264 CRF used for frames of ``size`` pixels."""
    return CRF if size >= 64 else CRF_SMALL


@dataclass(frozen=True)
class _Job:
    path: str
    motion: str
    seed: int
    index: int
    size: int
    frames: int


def _job_rng(job: _Job) -> np.random.Generator:
    return np.random.default_rng([job.seed, MOTIONS.index(job.motion), job.index])


def video_boxes(motion: str, index: int, *, seed: int, size: int, frames: int) -> np.ndarray:
    """:func:`object_boxes` of video ``index`` of class ``motion`` of a dataset made with ``seed``,
    ``size`` and ``frames`` (its scene drawn again: no rendering, no encoding)."""
    _check_motion(motion)
    rng = _job_rng(_Job("", motion, seed, index, size, frames))
    return object_boxes(sample_scene(motion, rng, size, frames))


def _job_boxes(job: _Job) -> list[list[int]]:
    return video_boxes(job.motion, job.index, seed=job.seed, size=job.size, frames=job.frames).tolist()


def _make_video(job: _Job) -> int:
    """Worker entry: render and encode one video; returns its file size in bytes."""
    rng = _job_rng(job)
    encode_video(job.path, render_video(job.motion, rng, job.size, job.frames), crf=crf_for(job.size))
    return os.path.getsize(job.path)


@dataclass
class SynthReport:
    """What :func:`synthesize` wrote."""

    out: Path
    classes: list[str]
    counts: dict[str, int]  # videos per split: train, val, test
    per_class: dict[str, int]  # videos per class and split: train, val, test
    bytes: int
    elapsed_s: float

    @property
    def videos(self) -> int:
        return sum(self.counts.values())


def _check_args(**values: Any) -> None:
    """One-line DataErrors for values that cannot make a dataset (only the keys given are checked)."""
    size = values.get("size")
    if size is not None and (size < MIN_SIZE or size % 2):
        raise DataError(f"--size must be an even number of pixels >= {MIN_SIZE}, got {size}")
    frames = values.get("frames")
    if frames is not None and frames < MIN_FRAMES:
        raise DataError(f"--frames must be >= {MIN_FRAMES}, got {frames}")
    fraction = values.get("val_fraction")
    if fraction is not None and not 0 < fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {fraction}")
    test = values.get("test_per_class")
    if test is not None and test < 0:
        raise DataError(f"--test-per-class must be >= 0, got {test}")
    workers = values.get("workers")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")


def _check_classes(classes: Sequence[str] | None) -> list[str]:
    chosen = list(MOTIONS if classes is None else classes)
    unknown = [c for c in chosen if c not in MOTIONS]
    if unknown:
        raise DataError(f"unknown class {', '.join(map(repr, unknown))}; choose from {', '.join(MOTIONS)}")
    if len(set(chosen)) != len(chosen):
        raise DataError(
            f"classes are listed twice: {', '.join(sorted({c for c in chosen if chosen.count(c) > 1}))}"
        )
    if len(chosen) < 2:
        raise DataError("give at least 2 classes")
    return chosen


def _split_sizes(per_class: int, val_fraction: float) -> tuple[int, int]:
    n_val = round(per_class * val_fraction)
    n_train = per_class - n_val
    if n_val < 1 or n_train < 1:
        raise DataError(
            f"--per-class {per_class} is too small for --val-fraction {val_fraction}: "
            "each class needs at least one train and one val video"
        )
    return n_train, n_val


def _check_out(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a non-empty folder unless it is a synth output made with the same settings."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / SYNTH_JSON).read_text(encoding="utf-8"))
        ours = previous.get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DataError(
            f"--out {out} is a non-empty folder that is not a synth output; choose a new or empty one"
        )
    before = previous.get("settings", {})
    changed = [f"{k} {before.get(k)!r} → {v!r}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        raise DataError(
            f"{out} holds a synth dataset made with other settings ({'; '.join(changed)}); "
            "use another --out folder (or delete this one)"
        )


def _remove_leftovers(videos: Path) -> None:
    """Temporary files of a killed run (``.<name>.mp4.<random>.tmp``); complete files are never touched."""
    if videos.is_dir():
        for tmp in videos.glob("*/.*.mp4.*.tmp"):
            tmp.unlink(missing_ok=True)


def _make_videos(jobs: list[_Job], workers: int, log: Callable[[str], Any]) -> int:
    """Make every video; returns the total bytes. Logs progress about every 10 %."""
    total, done, step = 0, 0, max(1, len(jobs) // 10)

    def progress() -> None:
        if done % step == 0 or done == len(jobs):
            log(f"synth: {done}/{len(jobs)} videos")

    if workers <= 1:
        for job in jobs:
            total += _make_video(job)
            done += 1
            progress()
        return total
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for size in pool.map(_make_video, jobs, chunksize=4):
            total += size
            done += 1
            progress()
    return total


def synthesize(
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    per_class: int = 100,
    val_fraction: float = 0.2,
    test_per_class: int = 2,
    size: int = 64,
    frames: int = 48,
    seed: int = 0,
    workers: int | None = None,
    boxes: bool = False,
    log: Callable[[str], Any] = print,
) -> SynthReport:
    """Render, encode and list a synthetic motion dataset under ``out`` (see the module docstring).

    Per class, ``per_class`` videos are split into train and ``round(per_class * val_fraction)`` val;
    ``test_per_class`` more go to test. Video ``i`` of a class is the same file whatever the split
    sizes, the class subset or the number of workers. ``boxes`` also writes ``boxes.json`` (the main
    object's box in every frame of every video, see :func:`object_boxes`).
    """
    started = time.monotonic()
    out = Path(out)
    chosen = _check_classes(classes)
    _check_args(size=size, frames=frames, val_fraction=val_fraction, test_per_class=test_per_class)
    n_train, n_val = _split_sizes(per_class, val_fraction)
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    _check_args(workers=workers)
    settings = {
        "version": VERSION,
        "classes": chosen,
        "per_class": per_class,
        "val_fraction": val_fraction,
        "test_per_class": test_per_class,
        "size": size,
        "frames": frames,
        "seed": seed,
    }
    _check_out(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"generator": GENERATOR, "complete": False, "settings": settings}
    _write_json(out / SYNTH_JSON, meta)
    _remove_leftovers(out / VIDEOS)

    splits = {
        "train": range(n_train),
        "val": range(n_train, per_class),
        "test": range(per_class, per_class + test_per_class),
    }
    lines: dict[str, list[str]] = {s: [] for s in splits}
    jobs: list[_Job] = []
    for label, motion in enumerate(chosen):
        for split, indices in splits.items():
            for i in indices:
                rel = f"{VIDEOS}/{motion}/{motion}_{i:04d}.mp4"
                lines[split].append(f"{rel} {label}")
                jobs.append(_Job(str(out / rel), motion, seed, i, size, frames))
    shape = f"{len(chosen)} classes, {size}x{size}, {frames} frames"
    log(f"synth: rendering {len(jobs)} videos ({shape}) into {out}")
    total_bytes = _make_videos(jobs, workers, log)
    if boxes:
        _write_boxes(
            out / BOXES_JSON, size, {os.path.relpath(job.path, out): _job_boxes(job) for job in jobs}
        )
    for split, split_lines in lines.items():
        atomic_write_bytes(out / f"{split}.txt", "".join(f"{line}\n" for line in split_lines).encode())
    atomic_write_bytes(
        out / "classes.txt", "".join(f"{name} {i}\n" for i, name in enumerate(chosen)).encode()
    )
    counts = {split: len(split_lines) for split, split_lines in lines.items()}
    elapsed = time.monotonic() - started
    meta.update(
        {
            "complete": True,
            "counts": counts,
            "per_class": {"train": n_train, "val": n_val, "test": test_per_class},
            "fps": FPS,
            "codec": f"libx264 crf {crf_for(size)} yuv420p",
            "bytes": total_bytes,
            "elapsed_s": round(elapsed, 3),
        }
    )
    _write_json(out / SYNTH_JSON, meta)
    return SynthReport(out, chosen, counts, meta["per_class"], total_bytes, elapsed)


def _write_boxes(path: Path, size: int, boxes: dict[str, list[list[int]]]) -> None:
    """``boxes.json``: one line per video, so the file stays small and readable."""
    note = (
        "per video, per frame: x0 y0 x1 y1 of the main object in pixels (x1, y1 exclusive; the frame "
        "wraps around, so a box may run past an edge and continue on the other side)"
    )
    head = {"generator": GENERATOR, "format": note, "size": size}
    rows = ",\n".join(
        f"  {json.dumps(rel)}: {json.dumps(b, separators=(',', ':'))}" for rel, b in boxes.items()
    )
    atomic_write_bytes(path, (json.dumps(head)[:-1] + ', "videos": {\n' + rows + "\n}}\n").encode())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def prepare_command(out: str | os.PathLike, size: int) -> str:
    """The ``stnet prepare list`` command that turns the synth output ``out`` into a clip store."""
    root = str(out).rstrip("/") or "/"
    q = shlex.quote
    prepared = f"{root}_prepared"
    return (
        f"stnet prepare list --root {q(root)} --list train={q(root + '/train.txt')} "
        f"--list val={q(root + '/val.txt')} --label-file {q(root + '/classes.txt')} "
        f"--out {q(prepared)} --short-side {size}"
    )


def cmd_synth(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """``stnet synth``: write the dataset and print a summary with the next command."""
    if rest:
        raise DataError(f"unexpected arguments: {' '.join(rest)}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    report = synthesize(
        args.out,
        classes=classes,
        per_class=args.per_class,
        val_fraction=args.val_fraction,
        test_per_class=args.test_per_class,
        size=args.size,
        frames=args.frames,
        seed=args.seed,
        workers=args.workers,
        boxes=args.boxes,
        log=(lambda _message: None) if args.quiet else print,
    )
    c = report.counts
    print(
        f"wrote {report.videos} videos ({len(report.classes)} classes: {c['train']} train, {c['val']} val, "
        f"{c['test']} test; {report.bytes / 1e6:.1f} MB) to {report.out} in {report.elapsed_s:.1f} s"
    )
    boxes = f", {BOXES_JSON}" if args.boxes else ""
    print(f"lists: train.txt, val.txt, test.txt, classes.txt{boxes}; next:")
    print(f"  {prepare_command(report.out, args.size)}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``synth`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic motion dataset (8 classes only temporal modelling can tell apart)",
        description="Render videos of one object moving left/right/up/down, growing, shrinking, or turning "
        "at mid-clip, on noisy textured backgrounds with distractors, as H.264 MP4 under OUT/videos, with "
        "train.txt, val.txt, test.txt and classes.txt for `stnet prepare list`. No single frame tells the "
        "class: only the motion does. The same seed gives byte-identical files.",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new, empty, or a previous synth output)"
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help=f"comma-separated subset of: {', '.join(MOTIONS)} (default all)",
    )
    p.add_argument(
        "--per-class",
        "--per_class",
        dest="per_class",
        type=int,
        default=100,
        metavar="N",
        help="train + val videos per class (default 100)",
    )
    p.add_argument(
        "--val-fraction",
        "--val_fraction",
        dest="val_fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="fraction of --per-class that goes to val (default 0.2)",
    )
    p.add_argument(
        "--test-per-class",
        "--test_per_class",
        dest="test_per_class",
        type=int,
        default=2,
        metavar="N",
        help="extra held-out test videos per class (default 2)",
    )
    p.add_argument("--size", type=int, default=64, metavar="PX", help="frame width and height (default 64)")
    p.add_argument("--frames", type=int, default=48, help="frames per video (default 48, 25 fps)")
    p.add_argument("--seed", type=int_arg(0, MAX_SEED), default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers",
        type=workers_arg(1),
        default=max(1, min(4, os.cpu_count() or 1)),
        metavar="K",
        help="rendering processes (default: CPU count, at most 4)",
    )
    p.add_argument(
        "--boxes",
        action="store_true",
        help=f"also write {BOXES_JSON}: the moving object's bounding box in every frame of every video",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_synth)
