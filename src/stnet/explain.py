"""``stnet explain``: Grad-CAM heat maps of a checkpoint's decision on a video.

Grad-CAM (Selvaraju et al., 2017) weighs a layer's activation maps by the mean gradient of the class
score over each map, sums them and keeps the positive part. Here the layer is a spatial stage of the
backbone (default ``layer4``, the last one, before the temporal Xception pools over segments), whose
activations are ``(B·T, C, h, w)``: one map per segment. The hooks are written here (a forward hook that
keeps the activations and registers a gradient hook on them), so nothing beyond PyTorch is needed.

Gradients need the PyTorch model: explain takes checkpoints only, never an export.

The clip is the model's eval view of the video (:class:`stnet.datasets.VideoClipDataset`, one centre
clip), so the frames shown are exactly the crops the model saw, and the heat maps are upsampled
bilinearly to their size. :func:`pointing_game` measures how much of the heat-map mass falls inside a
known object box (``stnet synth --boxes``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from stnet.argtypes import int_arg
from stnet.checkpoint import eval_model
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.errors import DataError, UserError
from stnet.fileio import atomic_path, refuse_overwriting_inputs
from stnet.sampling import frame_indices
from stnet.transforms import CropPlan, apply_plan, eval_plans, frame_size

LAYERS = ("layer1", "layer2", "temp1", "layer3", "temp2", "layer4")
DEFAULT_LAYER = "layer4"
OVERLAY_ALPHA = 0.5  # weight of the heat-map colour over the frame
ANIMATIONS = ("gif", "mp4", "none")


class ExplainError(UserError):
    """Something explain cannot do (an export instead of a checkpoint, an unknown class or layer)."""


# ----------------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------------


@dataclass
class CamResult:
    """Grad-CAM of one clip: per-segment maps at the layer's resolution, and the model's output."""

    maps: np.ndarray  # float32 (T, h, w), >= 0, not normalised
    logits: np.ndarray  # float32 (classes,)
    class_index: int


def grad_cam(
    model: nn.Module, clip: torch.Tensor, layer: str = DEFAULT_LAYER, class_index: int | None = None
) -> CamResult:
    """Grad-CAM of ``model`` (an :class:`stnet.model.StNet` in eval mode) on one clip ``(1, T, 3N, S, S)``
    for ``class_index`` (default: the predicted class), at the stage ``layer`` (one of :data:`LAYERS`)."""
    if layer not in LAYERS:
        raise ExplainError(f"unknown --layer {layer!r}; choose one of {', '.join(LAYERS)}")
    if clip.ndim != 5 or clip.shape[0] != 1:
        raise ValueError(f"grad_cam takes one clip (1, T, 3N, S, S), got {tuple(clip.shape)}")
    kept: dict[str, torch.Tensor] = {}

    def keep_gradient(grad: torch.Tensor) -> None:
        kept["gradient"] = grad

    def forward_hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        kept["activation"] = output
        output.register_hook(keep_gradient)

    handle = getattr(model, layer).register_forward_hook(forward_hook)
    try:
        with torch.enable_grad():
            logits = model(clip)[0]
            index = int(logits.argmax()) if class_index is None else class_index
            if not 0 <= index < logits.numel():
                raise ExplainError(
                    f"class index {index} is out of range for a model of {logits.numel()} classes"
                )
            model.zero_grad(set_to_none=True)
            logits[index].backward()
    finally:
        handle.remove()
    activation, gradient = kept["activation"].detach(), kept["gradient"].detach()  # (T, C, h, w)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # alpha_c per segment
    maps = F.relu((weights * activation).sum(dim=1))  # (T, h, w)
    return CamResult(maps.float().numpy(), logits.detach().float().numpy(), index)


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """Heat maps ``(T, h, w)`` → ``(T, size, size)``, bilinear (half-pixel centres, as image resizing)."""
    up = F.interpolate(
        torch.from_numpy(maps)[:, None], size=(size, size), mode="bilinear", align_corners=False
    )
    return up[:, 0].clamp_min(0).numpy()


# ----------------------------------------------------------------------------------------------------
# One video: its eval clip, the frames the model saw, and where they came from
# ----------------------------------------------------------------------------------------------------


@dataclass
class ClipView:
    """The eval clip of one video and how it was cut from the video."""

    clip: torch.Tensor  # (1, T, 3N, S, S) normalised, the model's input
    frames: np.ndarray  # uint8 (T, N, S, S, 3): the crops the model saw
    indices: list[int]  # the T·N video frame indices, segment-major
    plan: CropPlan  # the resize and crop applied to every frame
    num_frames: int  # frames the clip was sampled from


def clip_view(video: str | Path, spec: ClipSpec) -> ClipView:
    """The single centre eval clip of ``video`` (as ``stnet predict`` samples it), with its frames."""
    from stnet.video import read_frames

    sample = Sample(Path(video), 0)
    if sample.kind != "video":
        raise DataError(f"{video}: explain reads video files (mp4, avi, mkv, webm, mov, ...)")
    dataset = VideoClipDataset([sample], spec, "val", augment=False)
    try:
        clip, _ = dataset[0]
        first = read_frames(video, [0])[0][0]
    except (DataError, OSError) as e:
        raise DataError(str(e) if str(video) in str(e) else f"{video}: {e}") from None
    count = dataset.frame_count(sample.path)
    assert count is not None  # set by reading the clip
    indices = frame_indices(spec.recipe, count, spec.T, spec.N, train=False)
    plan = eval_plans(
        frame_size(first), spec.short_size, spec.target_size, 1, fixed_aspect=spec.fixed_aspect
    )[0]
    return ClipView(clip[None], _denormalise(clip, spec), indices, plan, count)


def _denormalise(clip: torch.Tensor, spec: ClipSpec) -> np.ndarray:
    """Normalised ``(T, 3N, S, S)`` → uint8 frames ``(T, N, S, S, 3)`` (the crops, to draw on)."""
    t, _, s, _ = clip.shape
    x = clip.view(t, spec.N, 3, s, s).permute(0, 1, 3, 4, 2).double()
    x = (x * torch.tensor(spec.std, dtype=torch.float64) + torch.tensor(spec.mean, dtype=torch.float64)) * 255
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def mask_in_crop(mask: np.ndarray, plan: CropPlan) -> np.ndarray:
    """A boolean mask of a video frame ``(H, W)`` cut like the frame by ``plan``: boolean ``(S, S)``."""
    image = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)
    return apply_plan([image], plan)[0, :, :, 0] >= 128


# ----------------------------------------------------------------------------------------------------
# Explaining a video, drawing the result
# ----------------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    video: Path
    class_index: int
    class_name: str
    prob: float  # softmax probability of the explained class
    predicted: str  # the top-1 class
    layer: str
    heat: np.ndarray  # float32 (T, S, S) in [0, 1]: the upsampled maps over the clip's maximum
    view: ClipView

    def to_json(self) -> dict[str, Any]:
        return {
            "video": str(self.video),
            "class": self.class_name,
            "index": self.class_index,
            "prob": round(self.prob, 6),
            "predicted": self.predicted,
            "layer": self.layer,
            "segment_peak": [round(float(h.max()), 4) for h in self.heat],
        }


def class_index_of(name: str, class_names: Sequence[str]) -> int:
    """The index of ``name`` (a class name, or an index as text) among ``class_names``."""
    if name in class_names:
        return list(class_names).index(name)
    if name.isdigit() and int(name) < len(class_names):
        return int(name)
    shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    raise ExplainError(f"unknown --class {name!r}; the model's classes are: {shown}")


def explain(
    model: nn.Module,
    spec: ClipSpec,
    class_names: Sequence[str],
    video: str | Path,
    *,
    class_name: str | None = None,
    layer: str = DEFAULT_LAYER,
) -> Explanation:
    """Grad-CAM of ``model`` on the eval clip of ``video`` for ``class_name`` (default: the predicted one)."""
    index = None if class_name is None else class_index_of(class_name, class_names)
    view = clip_view(video, spec)
    cam = grad_cam(model, view.clip, layer, index)
    heat = upsample(cam.maps, spec.target_size)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    probs = torch.softmax(torch.from_numpy(cam.logits).double(), 0).numpy()
    return Explanation(
        Path(video),
        cam.class_index,
        class_names[cam.class_index],
        float(probs[cam.class_index]),
        class_names[int(probs.argmax())],
        layer,
        heat.astype(np.float32),
        view,
    )


def colour_map(values: np.ndarray) -> np.ndarray:
    """The "jet" colour map: values in [0, 1] → uint8 RGB (blue, cyan, yellow, red)."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``frame`` (S, S, 3) uint8 with the heat map (S, S) in [0, 1] blended over it."""
    mixed = (1 - OVERLAY_ALPHA) * frame.astype(np.float32) + OVERLAY_ALPHA * colour_map(heat)
    return mixed.round().astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _tile(image: np.ndarray, tile: int) -> Image.Image:
    return Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR)


def grid_image(ex: Explanation, tile: int = 128) -> Image.Image:
    """The PNG grid: one row per segment, one column per frame of it, each frame with its segment's heat
    map; a title with the class and probability, and each row's video frame numbers."""
    frames = ex.view.frames
    t, n = frames.shape[:2]
    label_w, title_h, pad = 96, 44, 4
    width = label_w + n * (tile + pad)
    height = title_h + t * (tile + pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    title = f"{ex.class_name}  p={ex.prob:.3f}"
    if ex.predicted != ex.class_name:
        title += f"  (predicted: {ex.predicted})"
    draw.text((6, 4), title, fill="black", font=_font(16))
    draw.text((6, 24), f"Grad-CAM at {ex.layer} · {ex.video.name}", fill="dimgray", font=_font(12))
    for i in range(t):
        y = title_h + i * (tile + pad)
        frames_text = ",".join(str(k) for k in ex.view.indices[i * n : (i + 1) * n])
        draw.text((6, y + tile // 2 - 14), f"segment {i + 1}", fill="black", font=_font(13))
        draw.text((6, y + tile // 2 + 2), f"frames {frames_text}", fill="dimgray", font=_font(10))
        for j in range(n):
            canvas.paste(_tile(overlay(frames[i, j], ex.heat[i]), tile), (label_w + j * (tile + pad), y))
    return canvas


def animation_frames(ex: Explanation, tile: int = 192) -> list[np.ndarray]:
    """Every frame of the video, cut as the model saw it, with the heat map of the segment it lies in
    (segment t spans frames ``[t·L/T, (t+1)·L/T)`` of an L-frame video, as the sampling divides it)."""
    from stnet.video import iter_frames

    t = ex.heat.shape[0]
    count = ex.view.num_frames
    out = []
    font = _font(max(10, tile // 14))
    for i, frame in enumerate(iter_frames(ex.video)):
        if i >= count:
            break
        crop = apply_plan([frame], ex.view.plan)[0]
        segment = min(t - 1, i * t // count)
        image = _tile(overlay(crop, ex.heat[segment]), tile)
        draw = ImageDraw.Draw(image)
        draw.text((4, 2), f"{ex.class_name} {ex.prob:.2f} · seg {segment + 1}", fill="white", font=font)
        out.append(np.asarray(image))
    return out


def _video_fps(video: Path) -> float:
    from stnet.video import open_video

    with open_video(video) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def write_outputs(ex: Explanation, out: Path, animation: str = "gif", tile: int = 128) -> list[Path]:
    """Write ``<stem>.gradcam.png`` (the grid) and the animation ``<stem>.gradcam.gif|mp4`` into ``out``,
    atomically; returns the paths written."""
    if animation not in ANIMATIONS:
        raise ExplainError(f"unknown animation {animation!r}; choose one of {', '.join(ANIMATIONS)}")
    stem = ex.video.stem
    written = [out / f"{stem}.gradcam.png"]
    with atomic_path(written[0]) as tmp:
        grid_image(ex, tile).save(tmp, format="PNG")
    if animation == "none":
        return written
    frames = animation_frames(ex, max(64, tile + tile % 2))
    fps = _video_fps(ex.video)
    path = out / f"{stem}.gradcam.{animation}"
    if animation == "mp4":
        from stnet.encode import encode_video

        encode_video(path, np.stack(frames), fps=max(1, round(fps)))
    else:
        images = [Image.fromarray(f) for f in frames]
        with atomic_path(path) as tmp:
            images[0].save(
                tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
            )
    written.append(path)
    return written


# ----------------------------------------------------------------------------------------------------
# Pointing game: Grad-CAM mass inside a known object box
# ----------------------------------------------------------------------------------------------------


@dataclass
class PointingScore:
    """Mean over videos (and over each video's sampled frames) of the heat-map mass share inside the
    object's box and of the box's share of the crop's area; ``hits``: frames whose heat-map peak lies in
    the box (the classic pointing game)."""

    videos: int
    mass_in_box: float
    area_of_box: float
    hit_rate: float

    def line(self) -> str:
        return (
            f"pointing game over {self.videos} videos: {100 * self.mass_in_box:.1f} % of the Grad-CAM mass "
            f"inside the object's box, which covers {100 * self.area_of_box:.1f} % of the frame; "
            f"peak inside the box in {100 * self.hit_rate:.1f} % of the frames"
        )


def pointing_game(
    model: nn.Module,
    spec: ClipSpec,
    videos: Iterable[tuple[Path, Callable[[int], np.ndarray]]],
    *,
    layer: str = DEFAULT_LAYER,
    true_class: Callable[[Path], int] | None = None,
) -> PointingScore:
    """Score Grad-CAM against object boxes: ``videos`` yields ``(video, mask_of)`` with ``mask_of(i)``
    the boolean object mask of video frame ``i`` (H, W). The map explained is the predicted class's, or
    ``true_class(video)``'s."""
    mass, area, hits, frames, count = 0.0, 0.0, 0, 0, 0
    for video, mask_of in videos:
        view = clip_view(video, spec)
        index = None if true_class is None else true_class(video)
        heat = upsample(grad_cam(model, view.clip, layer, index).maps, spec.target_size)
        n = spec.N
        video_mass, video_area = 0.0, 0.0
        for k, frame_index in enumerate(view.indices):
            h = heat[k // n]
            box = mask_in_crop(mask_of(frame_index), view.plan)
            total = float(h.sum())
            video_mass += float(h[box].sum()) / total if total > 0 else float(box.mean())
            video_area += float(box.mean())
            hits += bool(box.flat[int(h.argmax())]) if total > 0 else 0
            frames += 1
        mass += video_mass / len(view.indices)
        area += video_area / len(view.indices)
        count += 1
    if count == 0:
        raise DataError("pointing game: no videos")
    return PointingScore(count, mass / count, area / count, hits / frames)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def _refuse_exports(path: str) -> None:
    from stnet.runners import SUFFIXES

    if Path(path).suffix.lower() in SUFFIXES:
        raise ExplainError(
            f"{path} is an exported model; Grad-CAM needs gradients, which only the PyTorch model gives: "
            "pass the checkpoint it was exported from (--checkpoint run/checkpoints/best.pt)"
        )


def cmd_explain(args: argparse.Namespace, rest: Sequence[str]) -> int:
    if args.model is not None:
        _refuse_exports(args.model)
        raise ExplainError("explain takes --checkpoint FILE (a PyTorch checkpoint), not --model")
    if args.checkpoint is None:
        raise ExplainError("give --checkpoint FILE: Grad-CAM runs the PyTorch model of a checkpoint")
    stems = [Path(v).stem for v in args.videos]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ExplainError(
            f"two videos named {twice[0]}: their outputs would collide; explain them one by one"
        )
    _refuse_exports(args.checkpoint)
    model, cfg, class_names = eval_model(args.checkpoint, args.config, rest, args.classes)
    spec = ClipSpec.from_config(cfg)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ExplainError(f"--out {out} is not a folder")
    suffixes = [".gradcam.png"] + ([] if args.animation == "none" else [f".gradcam.{args.animation}"])
    targets = [out / f"{stem}{suffix}" for stem in stems for suffix in suffixes]
    refuse_overwriting_inputs([out, *targets], [*args.videos, args.checkpoint])
    for video in args.videos:
        ex = explain(model, spec, class_names, video, class_name=args.class_name, layer=args.layer)
        written = write_outputs(ex, out, args.animation, args.tile)
        if args.json:
            print(json.dumps({**ex.to_json(), "files": [str(p) for p in written]}), flush=True)
        else:
            print(
                f"{video}: {ex.class_name} {ex.prob:.3f} (Grad-CAM at {ex.layer}) -> "
                + ", ".join(map(str, written))
            )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``explain`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM heat maps of a checkpoint's decision on videos (PNG grid and animation)",
        description="Grad-CAM of the class score (default: the predicted class) at a spatial stage of the "
        "backbone (default layer4, before the temporal Xception pools over segments): one heat map per "
        "segment, overlaid on the frames the model saw. Writes OUT/<video>.gradcam.png (segments x frames, "
        "with the class and probability) and OUT/<video>.gradcam.gif (or .mp4). Checkpoints only: "
        "gradients need the PyTorch model, which an ONNX export does not hold.",
    )
    p.add_argument("--config", "--config_path", dest="config", default=None, help="config YAML (optional)")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--checkpoint", default=None, help="checkpoint or weights file (PyTorch)")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)  # refused with a reason
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the images")
    p.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="NAME",
        help="class to explain (default: predicted)",
    )
    p.add_argument(
        "--layer", choices=LAYERS, default=DEFAULT_LAYER, help=f"stage to explain (default {DEFAULT_LAYER})"
    )
    p.add_argument("--classes", default=None, help="class names file, for weights that do not carry them")
    p.add_argument(
        "--animation",
        choices=ANIMATIONS,
        default="gif",
        help="animated overlay format (default gif; none: grid only)",
    )
    p.add_argument(
        "--tile",
        type=int_arg(16, 1024),
        default=128,
        metavar="PX",
        help="size of each frame in the grid (default 128)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per video")
    p.set_defaults(func=cmd_explain)
