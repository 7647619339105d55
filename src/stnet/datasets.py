"""Datasets of StNet clips (the DataLoader around them is :mod:`stnet.loader`).

A sample is a video in one of four forms, recognised by its path:

* ``*.stclip`` — a clip file written by ``stnet prepare`` (the fast path: only the needed frames are read);
* ``*.pkl`` — a reference Kinetics pickle ``(vid, label, [jpeg bytes])``, read by a restricted unpickler
  that builds only str/int/bytes/lists/tuples (a malicious pickle raises DataError and runs nothing);
* a folder of ``*.jpg`` frames (sorted numerically, so the reference's unpadded ``00000.jpg … 000010.jpg``
  keep their order), in RGB or, set by ``frame_colors``, BGR: the reference's UCF101 frame folders hold
  JPEGs with red and blue swapped (see :func:`resolve_frame_colors`);
* any other file — a video decoded with PyAV (training straight from videos, same sampling).

Each item is ``(clip, label)`` with ``clip`` float32 ``(T, 3N, S, S)`` (channel 3k+c = colour c of
frame k of the segment; uint8 pixels, normalised later on the device, from
:meth:`VideoClipDataset.as_uint8`) or, with ``test_views=(K, C)``, ``(K·C, T, 3N, S, S)``: K temporal
clips × C spatial crops, clip-major, for score averaging. The split is a :class:`Split` and chooses the list;
train augmentation is applied to the train split unless ``augment=False`` (evaluation of any split).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import itertools
import json
import os
import pickle
import random
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stnet.clipstore import SUFFIX as CLIP_SUFFIX
from stnet.clipstore import ClipReader, decode_jpeg
from stnet.config import Config
from stnet.errors import DataError
from stnet.lists import read_classes, read_text
from stnet.sampling import RECIPES, frame_indices
from stnet.transforms import (
    CROP_COUNTS,
    Frame,
    apply_plan,
    eval_plans,
    frame_size,
    to_clip_tensor,
    to_clip_uint8,
    train_plan,
)
from stnet.video import count_packets, read_frames

__all__ = [
    "ClipSpec",
    "DataError",
    "Sample",
    "Split",
    "VideoClipDataset",
    "build_dataset",
    "detect_format",
    "frame_files",
    "read_classes",
    "read_list",
    "read_reference_pickle",
    "resolve_frame_colors",
    "with_frame_colors",
]


class Split(enum.Enum):
    """Which part of a dataset: decides the list file (and, by default, whether to augment)."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"  # test.txt: written by prepare when the test annotations have labels, and by synth

    @classmethod
    def coerce(cls, value: Split | str) -> Split:
        """A Split from itself or its name (``"train"``, ``"val"``, ``"test"``; ``"eval"``/``"validation"``
        mean val)."""
        if isinstance(value, Split):
            return value
        name = str(value).strip().lower()
        name = {"eval": "val", "validation": "val", "valid": "val"}.get(name, name)
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown split {value!r}; use 'train', 'val' or 'test'") from None


@dataclass(frozen=True)
class ClipSpec:
    """What one clip is: recipe, T segments × N frames, S×S crops of frames resized to ``short_size``."""

    recipe: str = "ucf101"
    T: int = 7
    N: int = 5
    target_size: int = 112
    short_size: int = 128
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    fixed_aspect: bool = False  # the reference's 4:3 group_scale instead of an aspect-keeping resize
    flip: bool = True  # random horizontal flips in training (off for direction-dependent classes)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown dataset recipe {self.recipe!r}; use one of {', '.join(RECIPES)}")

    @classmethod
    def from_config(cls, cfg: Any, *, fixed_aspect: bool | None = None) -> ClipSpec:
        """The spec of a :class:`stnet.config.Config` (``dataset_type``, T, N, sizes, mean/std, resize
        mode: ``fixed_aspect`` if given, else the config's)."""
        if fixed_aspect is None:
            fixed_aspect = getattr(cfg, "fixed_aspect", False)
        return cls(
            cfg.dataset_type,
            cfg.T,
            cfg.N,
            cfg.target_size,
            cfg.short_size,
            tuple(cfg.image_mean),
            tuple(cfg.image_std),
            fixed_aspect,
            getattr(cfg, "flip", True),
        )


@dataclass(frozen=True)
class Sample:
    """One video: its path and label (a reference pickle's own label replaces this one)."""

    path: Path
    label: int

    @property
    def kind(self) -> str:
        """``clip``, ``pickle``, ``frames`` (a folder of JPEGs) or ``video``."""
        suffix = self.path.suffix.lower()
        if suffix == CLIP_SUFFIX:
            return "clip"
        if suffix == ".pkl":
            return "pickle"
        if self.path.is_dir():
            return "frames"
        return "video"


# ----------------------------------------------------------------------------------------------------
# Reading the reference's files safely
# ----------------------------------------------------------------------------------------------------


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Python 3 pickles ``bytes`` at protocol 2 as _codecs.encode(text, "latin1"); allow exactly that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes() is allowed only without arguments")
    return b""


_SAFE_GLOBALS: dict[tuple[str, str], Callable[..., bytes]] = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only str, int, bytes, lists and tuples; refuses every other global (and so any code)."""

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is None:
            raise pickle.UnpicklingError(f"it references {module}.{name}")
        return safe

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it uses persistent ids")


def read_reference_pickle(path: str | os.PathLike) -> tuple[int, list[bytes]]:
    """``(label, jpeg frames)`` of a reference Kinetics ``.pkl`` file ``(vid, label, [jpeg bytes])``.

    Only str/int/bytes/list/tuple are ever built: a pickle that would construct anything else (and so
    could run code) raises DataError before any of it runs.
    """
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
    ) as e:
        raise DataError(
            f"{path}: refusing to load this pickle: {e}; a reference Kinetics .pkl holds only "
            "(vid, label, [jpeg bytes]) — the file is corrupt or not safe to load"
        ) from None
    if not (
        isinstance(data, tuple | list)
        and len(data) == 3
        and isinstance(data[1], int)
        and isinstance(data[2], list | tuple)
        and all(isinstance(b, bytes) for b in data[2])
    ):
        raise DataError(f"{path}: not a reference Kinetics pickle (expected (vid, label, [jpeg bytes]))")
    return int(data[1]), list(data[2])


_DIGITS = re.compile(r"\d+")


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The JPEG frames of a frame folder in numeric order (``00009.jpg`` before ``000010.jpg``)."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]

    def key(p: Path) -> tuple[int, str]:
        digits = _DIGITS.findall(p.stem)
        return (int(digits[-1]) if digits else -1, p.name)

    return sorted(files, key=key)


# The reference's UCF101 preprocessing writes frames as ``0000{i}.jpg`` (i unpadded: 000010.jpg follows
# 00009.jpg) at 171x128 with cv2.imwrite of decord's RGB arrays, i.e. red and blue swapped on disk.
REFERENCE_FRAME_SIZE = (171, 128)
_REFERENCE_NAMES_MIN = 11  # from 11 frames on, "000010.jpg" tells the reference's names from %05d ones
FRAME_FOLDERS_CHECKED = 3


def reference_frame_folder(folder: Path) -> bool:
    """Whether ``folder`` is laid out exactly as the reference's UCF101 preprocessing writes it: files
    ``0000{i}.jpg`` for i = 0..n-1 (n >= 11, so the unpadded ``000010.jpg`` is there) and 171x128 frames.
    """
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    if len(names) < _REFERENCE_NAMES_MIN or names != {f"0000{i}.jpg" for i in range(len(names))}:
        return False
    try:
        with Image.open(folder / "00000.jpg") as image:
            return image.size == REFERENCE_FRAME_SIZE
    except OSError:
        return False


def resolve_frame_colors(setting: str, samples: Sequence[Sample]) -> tuple[str, str] | None:
    """The colour order of the frame folders among ``samples`` and why: ``(order, reason)``, or None when
    there are none. ``setting`` is ``cfg.frame_colors``; with ``auto`` the order is bgr only when the
    first few frame folders all carry the reference's layout (names and size), else rgb: colours
    themselves cannot tell a swapped JPEG from a correct one."""
    folders = [s.path for s in samples if s.kind == "frames"]
    if not folders:
        return None
    if setting != "auto":
        return setting, "set by frame_colors"
    step = max(1, len(folders) // FRAME_FOLDERS_CHECKED)
    checked = folders[::step][:FRAME_FOLDERS_CHECKED]
    if all(reference_frame_folder(f) for f in checked):
        w, h = REFERENCE_FRAME_SIZE
        return "bgr", (
            f"the reference's UCF101 frames: 0000{{i}}.jpg names and {w}x{h} JPEGs, written by cv2 with "
            "red and blue swapped; set --frame_colors rgb if these are not"
        )
    return (
        "rgb",
        "not the reference's UCF101 frame layout; set --frame_colors bgr if red and blue are swapped",
    )


def with_frame_colors(cfg: Config, dataset: VideoClipDataset) -> Config:
    """``cfg`` with ``frame_colors: auto`` replaced by the order ``dataset`` resolved for its frame folders,
    so that the run's other splits and its checkpoints use and record the same order."""
    if cfg.frame_colors != "auto" or not any(s.kind == "frames" for s in dataset.samples):
        return cfg
    return dataclasses.replace(cfg, frame_colors=dataset.frame_colors)


def _load_image(path: Path, bgr: bool) -> np.ndarray:
    frame = decode_jpeg(path.read_bytes())  # PNGs too (through Pillow)
    return np.ascontiguousarray(frame[:, :, ::-1]) if bgr else frame


# ----------------------------------------------------------------------------------------------------
# Lists
# ----------------------------------------------------------------------------------------------------


def read_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of an annotation list: ``relative/path label`` lines (paths may hold spaces).

    Paths are relative to ``root`` (default: the list's folder). Blank lines and ``#`` comments are skipped.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    text = read_text(path, "list file")
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise DataError(
                f"{path}:{number}: expected 'relative/path label' with an integer label >= 0, got {line!r}"
            )
        samples.append(Sample(base / parts[0], int(parts[1])))
    return samples


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------

ViewChooser = Callable[[int], list[list[int]]]  # frame count -> indices of each view


def eval_views(clips: int, crops: int) -> tuple[int, int] | None:
    """The ``test_views`` argument for ``clips`` × ``crops`` views per video: None for one centre clip
    (plain evaluation, one clip tensor per video)."""
    return None if (clips, crops) == (1, 1) else (clips, crops)


class VideoClipDataset(Dataset):
    """StNet clips from a list of samples (any mix of clip files, pickles, frame folders and videos).

    ``augment`` (default: for the train split) draws random offsets, crops and flips; without it every
    item is the deterministic eval view. ``test_views=(K, C)`` (evaluation only) returns K temporal × C
    spatial views per video, C in (1, 3, 10). When augmenting, a video that cannot be read is replaced
    by another (with a warning, once per video); in evaluation it raises DataError.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: ClipSpec,
        split: Split | str,
        *,
        test_views: tuple[int, int] | None = None,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        frame_colors: str = "rgb",
        augment: bool | None = None,
    ) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.split = Split.coerce(split)
        self.augment = self.split is Split.TRAIN if augment is None else augment
        if test_views is not None:
            if self.augment:
                raise ValueError("test_views are for evaluation (augment=False) only")
            clips, crops = test_views
            if clips < 1 or crops not in CROP_COUNTS:
                raise ValueError(f"test_views must be (clips >= 1, crops in {CROP_COUNTS}), got {test_views}")
            if crops == 10 and not spec.flip:
                raise DataError(
                    "10-crop testing adds mirrored crops, which flip: false rules out; use 3 crops"
                )
        self.test_views = test_views
        self.classes = list(classes) if classes is not None else None
        if frame_colors not in ("rgb", "bgr"):
            raise ValueError(f"frame_colors must be rgb or bgr, got {frame_colors!r}")
        self.frame_colors = frame_colors  # of frame folders' JPEGs; bgr ones are swapped back on reading
        self.seed = seed
        self.epoch = 0
        self.rng = random.Random(seed)
        self._video_frames: dict[Path, int] = {}
        self._warned: set[Path] = set()
        self.uint8 = False  # see as_uint8

    def as_uint8(self) -> VideoClipDataset:
        """This dataset with items as uint8 pixels (``(T, 3N, S, S)``, not normalised): what loader workers
        hand over, normalised on the device by ``Normalise.from_spec(self.spec)``. A shallow copy: frame
        counts set on either are shared."""
        twin = copy.copy(self)
        twin.uint8 = True
        return twin

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentations (call before the loader's iterator is created)."""
        self.epoch = epoch

    def _sample_rng(self, index: int) -> random.Random:
        """The generator for one item: a function of (seed, epoch, index) alone, so a clip is augmented the
        same whichever worker or process loads it, and a resumed run repeats an uninterrupted one."""
        return random.Random((self.seed << 80) | (self.epoch << 40) | index)

    @property
    def train(self) -> bool:
        """Whether items are augmented training clips (else deterministic eval views)."""
        return self.augment

    def frame_count(self, path: Path) -> int | None:
        """The frame count a decoded video's clips were sampled from (None before it was read): fewer
        than the file announces when decoding stopped early."""
        return self._video_frames.get(path)

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return max((s.label for s in self.samples), default=-1) + 1

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tensors, label, source = self._item(index)
        if self.test_views is None:
            return tensors[0], label
        return torch.stack([tensors[i] for i in source]), label

    def distinct_views(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        """Item ``index`` with each distinct view once: ``(views, label, view_ids, weights)``.

        ``views`` is ``(D, T, 3N, S, S)``, D ≤ K·C: temporal clips that sample the same frames (a video
        shorter than the clips' spread) give identical views, kept once. ``view_ids`` are their positions
        among the K·C views of ``self[index]`` (the first of each repeat), ``weights`` how many of those
        views each stands for, so the weighted mean of per-view scores is the mean over all K·C views.
        Without ``test_views`` it is the one clip, ``D = 1``.
        """
        tensors, label, source = self._item(index)
        ids = sorted({s: j for j, s in reversed(list(enumerate(source)))}.values())
        weights = [source.count(source[j]) for j in ids]
        return (
            torch.stack([tensors[source[j]] for j in ids]),
            label,
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(weights, dtype=torch.long),
        )

    def label_of(self, index: int) -> int:
        """The listed label of item ``index`` without reading it (-1 for a reference pickle's)."""
        return self.samples[index].label

    def _item(self, index: int) -> tuple[list[torch.Tensor], int, list[int]]:
        self.rng = self._sample_rng(index)
        for _attempt in range(10):
            sample = self.samples[index]
            try:
                return self._clip(sample)
            except (DataError, OSError) as e:
                if not self.train:
                    raise DataError(f"{sample.path}: {e}") from None
                if sample.path not in self._warned:
                    self._warned.add(sample.path)
                    warnings.warn(f"skipping unreadable video {sample.path}: {e}", stacklevel=2)
                index = self.rng.randrange(len(self.samples))
        raise DataError("10 videos in a row could not be read; check the dataset")

    # -- internals

    def _chooser(self) -> ViewChooser:
        s = self.spec
        if self.train:
            return lambda n: [frame_indices(s.recipe, n, s.T, s.N, train=True, rng=self.rng)]
        clips = self.test_views[0] if self.test_views else 1
        return lambda n: [
            frame_indices(s.recipe, n, s.T, s.N, train=False, clip=j, num_clips=clips) for j in range(clips)
        ]

    def _clip(self, sample: Sample) -> tuple[list[torch.Tensor], int, list[int]]:
        """The tensors of the distinct views, the label, and for each of the K·C views (clip-major) the
        position of its tensor: temporal clips of identical frames are read and transformed once."""
        choose = self._chooser()
        repeat: list[int] = []  # per temporal clip: which distinct clip it is

        def distinct(num_frames: int) -> list[list[int]]:
            clips = [tuple(view) for view in choose(num_frames)]
            unique = list(dict.fromkeys(clips))
            repeat[:] = [unique.index(clip) for clip in clips]
            return [list(clip) for clip in unique]

        views, label = self._read(sample, distinct)
        s = self.spec
        size = frame_size(views[0][0])
        if self.train:
            plans = [
                train_plan(
                    s.recipe,
                    size,
                    s.short_size,
                    s.target_size,
                    self.rng,
                    fixed_aspect=s.fixed_aspect,
                    flip=s.flip,
                )
            ]
        else:
            crops = self.test_views[1] if self.test_views else 1
            plans = eval_plans(size, s.short_size, s.target_size, crops, fixed_aspect=s.fixed_aspect)
        tensors = [
            to_clip_uint8(apply_plan(frames, plan), s.T, s.N)
            if self.uint8
            else to_clip_tensor(apply_plan(frames, plan), s.T, s.N, s.mean, s.std)
            for frames in views
            for plan in plans
        ]
        source = [d * len(plans) + c for d in repeat for c in range(len(plans))]
        return tensors, label, source

    def _read(self, sample: Sample, choose: ViewChooser) -> tuple[list[list[Frame]], int]:
        """The frames of every temporal view (each distinct frame decoded once) and the label."""
        kind = sample.kind
        label = sample.label
        if kind == "clip":
            with ClipReader(sample.path) as reader:
                timeline = reader.info.timeline  # a store at a reduced rate: sampled in source frames
                views = [timeline.to_stored(view) for view in choose(timeline.sampled_frames)]
                need = sorted(set(itertools.chain.from_iterable(views)))
                images = dict(zip(need, reader.read_images(need), strict=True))
        elif kind == "pickle":
            label, jpegs = read_reference_pickle(sample.path)
            views = choose(len(jpegs))
            images = {i: decode_jpeg(jpegs[i]) for i in set(itertools.chain.from_iterable(views))}
        elif kind == "frames":
            files = frame_files(sample.path)
            views = choose(len(files))
            need = set(itertools.chain.from_iterable(views))
            images = {i: _load_image(files[i], self.frame_colors == "bgr") for i in need}
        else:
            views, images = self._read_video(sample.path, choose)
        return [[images[i] for i in view] for view in views], label

    def uncounted_videos(self) -> list[Path]:
        """The raw video files among the samples whose frame count is not known yet."""
        return [s.path for s in self.samples if s.kind == "video" and s.path not in self._video_frames]

    def set_frame_counts(self, counts: Mapping[Path, int]) -> None:
        """Remember videos' frame counts (from :func:`frame_counts`), so that reading a clip does not
        scan the video first. Set them before the loader starts: workers get a copy of the dataset."""
        self._video_frames.update(counts)

    def _read_video(self, path: Path, choose: ViewChooser) -> tuple[list[list[int]], dict[int, Frame]]:
        count = self._video_frames.get(path)
        if count is None:
            count = count_packets(path)
        for _ in range(2):
            views = choose(count)
            images, total = read_frames(path, itertools.chain.from_iterable(views))
            if total is None:
                self._video_frames[path] = count
                return views, images
            count = total  # the stream has fewer frames than packets: sample again within what decodes
            self._video_frames[path] = count
        raise DataError("the video's frame count keeps changing while decoding")


def frame_counts(paths: Iterable[Path], on_each: Callable[[], None] | None = None) -> dict[Path, int]:
    """The frame count (packets, see :func:`stnet.video.count_packets`) of each readable video of
    ``paths``; an unreadable one is left out (reading its clips reports it). ``on_each`` is called
    after each video (a progress bar)."""
    counts = {}
    for path in paths:
        with contextlib.suppress(DataError, OSError):
            counts[path] = count_packets(path)
        if on_each is not None:
            on_each()
    return counts


# ----------------------------------------------------------------------------------------------------
# Finding a dataset on disk
# ----------------------------------------------------------------------------------------------------


def detect_format(root: str | os.PathLike) -> str:
    """``list`` (``train.txt``/``val.txt``, e.g. from ``stnet prepare``), ``reference-kinetics``
    (``train.json``/``val.json`` + pickles) or ``reference-ucf101`` (``train/<class>/<video>/*.jpg``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if any((root / f"{s.value}.txt").is_file() for s in Split):
        return "list"
    if any((root / f"{s.value}.json").is_file() for s in Split):
        return "reference-kinetics"
    if any((root / s.value).is_dir() for s in Split):
        return "reference-ucf101"
    raise DataError(
        f"{root} holds no dataset: expected train.txt/val.txt (from `stnet prepare`), the reference's "
        "train.json/val.json with pickles, or its train/<class>/<video>/ frame folders"
    )


def _reference_kinetics(root: Path, split: Split) -> list[Sample]:
    listing = root / f"{split.value}.json"
    try:
        entries = json.loads(read_text(listing, "list file"))
    except json.JSONDecodeError as e:
        raise DataError(f"{listing} is not valid JSON: {e}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "video_name" in e for e in entries):
        raise DataError(f'{listing}: expected a JSON list of {{"video_name": "<stem>.mp4"}} objects')
    folder = root / split.value
    # The pickle holds the label; -1 here is replaced when the sample is read.
    return [Sample(folder / (os.path.splitext(str(e["video_name"]))[0] + ".pkl"), -1) for e in entries]


def _reference_ucf101(root: Path, split: Split) -> tuple[list[Sample], list[str]]:
    folder = root / split.value
    if not folder.is_dir():
        raise DataError(f"split folder not found: {folder}")
    train_folder = root / Split.TRAIN.value
    class_root = train_folder if train_folder.is_dir() else folder
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise DataError(f"{class_dir}: class {class_dir.name!r} is not among the train classes")
        samples += [Sample(v, index[class_dir.name]) for v in sorted(class_dir.iterdir()) if v.is_dir()]
    return samples, classes


def build_dataset(
    cfg: Any,
    split: Split | str,
    *,
    root: str | os.PathLike | None = None,
    test_views: tuple[int, int] | None = None,
    seed: int | None = None,
    augment: bool | None = None,
    model_source: str | None = None,
) -> VideoClipDataset:
    """The dataset of ``split`` under ``root`` (default ``cfg.dataset_path``), in any supported layout.

    T, N, sizes, mean/std and the recipe (``cfg.dataset_type``) come from ``cfg``, and so does the colour
    order of frame folders (``cfg.frame_colors``, resolved by :func:`resolve_frame_colors`, printed to
    stderr and kept as the dataset's ``frame_colors``). The resize is the fixed 4:3 one when
    ``cfg.fixed_aspect`` is set or the store was prepared with ``--fixed-aspect``. ``augment`` defaults
    to True for the train split (False: the eval views, for evaluating any split). Labels must be below
    ``cfg.class_num``; ``model_source`` names where that number comes from when it is not the user's
    setting (e.g. a checkpoint).
    """
    split = Split.coerce(split)
    if root is None:
        if not cfg.dataset_path:
            raise DataError(
                "dataset_path is not set: pass --dataset_path DIR (a folder from `stnet prepare`)"
            )
        root = cfg.dataset_path
    root = Path(root)
    fmt = detect_format(root)
    classes: list[str] | None = None
    if fmt == "list":
        if split is Split.TEST and not (root / "test.txt").is_file():
            raise DataError(
                f"{root} has no test split (test.txt): prepare writes one only when the test annotations "
                "carry labels; evaluate --split val"
            )
        samples = read_list(root / f"{split.value}.txt", root)
        if (root / "classes.txt").is_file():
            classes = read_classes(root / "classes.txt")
    elif fmt == "reference-kinetics":
        samples = _reference_kinetics(root, split)
    else:
        samples, classes = _reference_ucf101(root, split)
    if not samples:
        raise DataError(f"the {split.value} split of {root} is empty")
    found = len(classes) if classes is not None else max(s.label for s in samples) + 1
    if found > cfg.class_num or (classes is not None and found != cfg.class_num):
        if model_source:
            raise DataError(
                f"{root} has {found} classes, the model of {model_source} has {cfg.class_num} "
                "(its weights fix the number): evaluate it on a dataset with its classes"
            )
        raise DataError(f"{root} has {found} classes, class_num is {cfg.class_num}: set --class_num {found}")
    colors = resolve_frame_colors(cfg.frame_colors, samples)
    if colors is not None and os.environ.get("RANK", "0") == "0":
        print(
            f"stnet: {split.value} frame folders of {root}: colours {colors[0]} ({colors[1]})",
            file=sys.stderr,
        )
    fixed_aspect = bool(getattr(cfg, "fixed_aspect", False)) or store_fixed_aspect(root)
    return VideoClipDataset(
        samples,
        ClipSpec.from_config(cfg, fixed_aspect=fixed_aspect),
        split,
        test_views=test_views,
        classes=classes,
        seed=cfg.seed if seed is None else seed,
        frame_colors=colors[0] if colors is not None else "rgb",
        augment=augment,
    )


def store_fixed_aspect(root: str | os.PathLike) -> bool:
    """Whether ``stnet prepare`` wrote the store at ``root`` with ``--fixed-aspect`` (its report's
    settings): its frames are 4:3 whatever the source's shape, so the model's recipe is that resize."""
    from stnet.prepare import REPORT

    report = Path(root) / REPORT
    if not report.is_file():
        return False
    try:
        settings = json.loads(report.read_text(encoding="utf-8-sig")).get("settings", {})
    except (ValueError, AttributeError):
        return False  # prepare refuses to reuse such a folder; here it only means nothing is recorded
    return bool(settings.get("fixed_aspect", False)) if isinstance(settings, dict) else False


def class_mismatch(data: Sequence[str], model: Sequence[str], shown: int = 3) -> str | None:
    """None when the dataset's and the model's class names agree, else one line showing both orders
    at the first ``shown`` differing positions (a different order scrambles every label). A model
    trained without class names (``0, 1, ...``) agrees with any dataset of as many classes."""
    if list(data) == list(model) or list(model) == [str(i) for i in range(len(data))]:
        return None
    if len(data) != len(model):
        return f"the dataset has {len(data)} classes, the model {len(model)}"
    differ = [i for i, (a, b) in enumerate(zip(data, model, strict=True)) if a != b]
    pairs = "; ".join(f"{i}: dataset {data[i]!r}, model {model[i]!r}" for i in differ[:shown])
    more = f" (and {len(differ) - shown} more)" if len(differ) > shown else ""
    return f"the dataset's classes differ from the model's at {len(differ)} positions ({pairs}{more})"
