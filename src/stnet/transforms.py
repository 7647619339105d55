"""Spatial transforms of a clip: one resize/crop/flip plan shared by all its frames, then the tensor.

A :class:`CropPlan` says where the frames go: resize to ``scaled`` (W, H), crop a ``size``×``size``
square at ``(x, y)``, flip or not. Train plans draw from a ``random.Random``; eval plans are
deterministic. :func:`apply_plan` resizes only the cropped square (Pillow bilinear with a source box,
equal to resize-then-crop up to ±1 rounding), which costs a fraction of resizing whole frames.

Recipes, as the reference's ``imgs_transform`` and ``UcfVideoDataset``: **kinetics400** resizes to
the short side (``group_scale``), takes a random crop and flips with p = 0.5 in train, a centre crop at
``round((W−S)/2)`` (Python rounding, half to even) in eval; **ucf101** additionally scales the resized
frame by ``s ~ U(1, 1.25)`` to ``(int(W·s), int(H·s))`` in train. The resize keeps the aspect ratio
unless ``fixed_aspect`` asks for the reference's 4:3 (``round(4/3·short)`` on the long side: 341×256,
171×128).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

CROP_COUNTS = (1, 3, 10)
UCF_SCALE = (1.0, 1.25)


@dataclass(frozen=True)
class CropPlan:
    """Resize the frames to ``scaled`` (W, H), crop ``size``×``size`` at (``x``, ``y``), then flip or not."""

    scaled: tuple[int, int]
    x: int
    y: int
    size: int
    flip: bool = False


def resized_size(width: int, height: int, short: int, *, fixed_aspect: bool = False) -> tuple[int, int]:
    """The (W, H) a ``width``×``height`` frame is resized to for a short side of ``short``.

    Frames whose short side already is ``short`` keep their size (as the reference's ``group_scale``).
    """
    if min(width, height) == short:
        return width, height
    if fixed_aspect:
        long = round(short * 4 / 3)
        return (long, short) if width >= height else (short, long)
    if width <= height:
        return short, max(short, round(height * short / width))
    return max(short, round(width * short / height)), short


def centre(extent: int, size: int) -> int:
    """The reference's centre-crop offset: ``round((extent − size) / 2)`` with Python's half-to-even."""
    return round((extent - size) / 2)


def _fit(scaled: tuple[int, int], size: int) -> None:
    if size > min(scaled):
        raise ValueError(f"crop {size} does not fit in frames of {scaled[0]}x{scaled[1]}")


def train_plan(
    recipe: str,
    frame_size: tuple[int, int],
    short: int,
    size: int,
    rng: random.Random,
    *,
    fixed_aspect: bool = False,
    flip: bool = True,
) -> CropPlan:
    """A random plan: (UCF: scale jitter,) random crop, flip with probability 0.5 (if ``flip``)."""
    scaled = resized_size(*frame_size, short, fixed_aspect=fixed_aspect)
    if recipe == "ucf101":
        s = rng.uniform(*UCF_SCALE)
        scaled = (int(scaled[0] * s), int(scaled[1] * s))
    elif recipe != "kinetics400":
        raise ValueError(f"unknown dataset recipe {recipe!r}")
    _fit(scaled, size)
    x = rng.randint(0, scaled[0] - size)
    y = rng.randint(0, scaled[1] - size)
    flipped = rng.random() < 0.5  # drawn either way, so ``flip`` changes nothing else
    return CropPlan(scaled, x, y, size, flipped and flip)


def eval_plans(
    frame_size: tuple[int, int], short: int, size: int, num_crops: int = 1, *, fixed_aspect: bool = False
) -> list[CropPlan]:
    """Deterministic views: 1 = centre; 3 = start, centre, end of the long side; 10 = 4 corners + centre,
    each also flipped."""
    scaled = resized_size(*frame_size, short, fixed_aspect=fixed_aspect)
    _fit(scaled, size)
    w, h = scaled
    cx, cy = centre(w, size), centre(h, size)
    if num_crops == 1:
        spots = [(cx, cy)]
    elif num_crops == 3:
        spots = [(0, cy), (cx, cy), (w - size, cy)] if w >= h else [(cx, 0), (cx, cy), (cx, h - size)]
    elif num_crops == 10:
        five = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), (cx, cy)]
        return [CropPlan(scaled, x, y, size, flip) for flip in (False, True) for x, y in five]
    else:
        raise ValueError(f"num_crops must be one of {CROP_COUNTS}, got {num_crops}")
    return [CropPlan(scaled, x, y, size) for x, y in spots]


Frame = Image.Image | np.ndarray  # an RGB PIL image or a uint8 (H, W, 3) array


def frame_size(frame: Frame) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W, 3) array."""
    if isinstance(frame, np.ndarray):
        return frame.shape[1], frame.shape[0]
    return frame.size


def _crop_one(frame: Frame, plan: CropPlan) -> np.ndarray:
    s = plan.size
    width, height = frame_size(frame)
    if (width, height) == plan.scaled:
        return np.asarray(frame)[plan.y : plan.y + s, plan.x : plan.x + s]
    image = Image.fromarray(frame) if isinstance(frame, np.ndarray) else frame
    fx, fy = width / plan.scaled[0], height / plan.scaled[1]
    box = (plan.x * fx, plan.y * fy, (plan.x + s) * fx, (plan.y + s) * fy)
    return np.asarray(image.resize((s, s), Image.Resampling.BILINEAR, box=box))


def apply_plan(frames: Sequence[Frame], plan: CropPlan) -> np.ndarray:
    """The frames resized, cropped and flipped by ``plan``: uint8 array (len(frames), S, S, 3).

    Frames are PIL images or uint8 (H, W, 3) arrays; a frame object repeated in ``frames`` is
    processed once.
    """
    done: dict[int, np.ndarray] = {}
    out = np.empty((len(frames), plan.size, plan.size, 3), np.uint8)
    for i, frame in enumerate(frames):
        key = id(frame)
        if key not in done:
            done[key] = _crop_one(frame, plan)
        out[i] = done[key][:, ::-1] if plan.flip else done[key]  # flipping costs nothing in this copy
    return out


def to_clip_uint8(frames: np.ndarray, T: int, N: int) -> torch.Tensor:
    """uint8 frames (T·N, S, S, 3) in segment-major order → uint8 clip (T, 3N, S, S), not normalised.

    Channel ``3k + c`` of segment t is colour c (RGB) of frame k of that segment. This is what loader
    workers hand over: a quarter of the float32 clip's bytes; :class:`Normalise` turns a batch of such
    clips into the model's input on the device.
    """
    n, h, w, _ = frames.shape
    if n != T * N:
        raise ValueError(f"expected T*N = {T * N} frames, got {n}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).view(T, N, h, w, 3).permute(0, 1, 4, 2, 3)
    return x.contiguous().view(T, 3 * N, h, w)


@dataclass(frozen=True)
class Normalise:
    """``(x/255 − mean)/std`` per RGB channel of uint8 clips ``(..., 3N, S, S)`` (channel 3k + c is colour
    c), computed on whatever device the clips are on; float32 out. Inputs that are already floating
    point pass through unchanged (they were normalised where they were made)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_spec(cls, spec: Any) -> Normalise:
        """The normalisation of a :class:`~stnet.datasets.ClipSpec` (or anything with mean and std)."""
        return cls(tuple(spec.mean), tuple(spec.std))

    def constants(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` float32 (3, 1, 1) on ``device``: x·scale − shift is the normalisation
        (computed in float64, then rounded once). Kept per device, so a CUDA loop copies them once."""
        return _constants(self.mean, self.std, str(torch.device(device)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x
        if x.dtype != torch.uint8:
            raise TypeError(f"Normalise expects uint8 pixels or a normalised float clip, got {x.dtype}")
        *lead, c, h, w = x.shape
        if c % 3:
            raise ValueError(f"expected 3N colour channels, got {c}")
        scale, shift = self.constants(x.device)
        out = x.view(*lead, c // 3, 3, h, w).to(torch.float32)
        return out.mul_(scale).sub_(shift).view(*lead, c, h, w)


@functools.lru_cache(maxsize=16)
def _constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    std_t = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std_t)).float().view(3, 1, 1)
    shift = (torch.tensor(mean, dtype=torch.float64) / std_t).float().view(3, 1, 1)
    return scale.to(device), shift.to(device)


def to_clip_tensor(
    frames: np.ndarray, T: int, N: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 frames (T·N, S, S, 3) in segment-major order → normalised float32 (T, 3N, S, S): the
    uint8 clip of :func:`to_clip_uint8` through :class:`Normalise`."""
    norm = Normalise((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))
    return norm(to_clip_uint8(frames, T, N))
