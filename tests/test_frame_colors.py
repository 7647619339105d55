"""Issue 14 item 6: the colour order of JPEG frame folders is a setting (``frame_colors``), not an
assumption. Before, every ``root/{train,val}/<class>/<video>/*.jpg`` dataset was read as the reference's
BGR JPEGs, so correct RGB frames trained with red and blue swapped, silently. Now: rgb unless the folders
carry the reference's layout (``0000{i}.jpg`` names, 171x128 frames) or the user sets bgr; printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stnet.config import Config
from stnet.datasets import build_dataset, with_frame_colors
from stnet.errors import ConfigError

COLOUR = (200, 60, 20)  # R, G, B: all three channels differ
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def config(**kw: object) -> Config:
    base = {"T": 2, "N": 1, "target_size": 32, "short_size": 32, "class_num": 2}
    return Config(**{**base, **kw})


def pattern(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy frame of ``COLOUR`` (RGB uint8)."""
    noise = rng.integers(-8, 9, size=(height, width, 3))
    return np.clip(np.array(COLOUR) + noise, 0, 255).astype(np.uint8)


def write_frame_folders(root: Path, names: list[str], size: tuple[int, int], *, swap: bool) -> Path:
    """``root/{train,val}/<class>/<video>/<name>`` JPEGs of ``COLOUR``; ``swap`` stores them BGR, as the
    reference's cv2.imwrite of RGB arrays does."""
    rng = np.random.default_rng(0)
    width, height = size
    for split in ("train", "val"):
        for cls in ("Alpha", "Bravo"):
            folder = root / split / cls / f"v_{cls}_g01_c01"
            folder.mkdir(parents=True)
            for name in names:
                frame = pattern(height, width, rng)
                Image.fromarray(frame[:, :, ::-1].copy() if swap else frame).save(folder / name, quality=95)
    return root


def mean_colour(clip: torch.Tensor) -> np.ndarray:
    """The mean R, G, B (0-255) of every frame of a normalised ``(T, 3N, S, S)`` clip."""
    return np.array([float((clip[:, c::3] * STD[c] + MEAN[c]).mean()) * 255 for c in range(3)])


OWN_NAMES = [f"{i:05d}.jpg" for i in range(1, 13)]  # e.g. ffmpeg -i v.mp4 %05d.jpg
REFERENCE_NAMES = [f"0000{i}.jpg" for i in range(12)]  # 00000.jpg ... 00009.jpg, 000010.jpg, 000011.jpg


def test_rgb_frame_folders_load_with_the_right_channel_order(tmp_path: Path, capsys) -> None:
    root = write_frame_folders(tmp_path, OWN_NAMES, (64, 48), swap=False)
    ds = build_dataset(config(), "val", root=root)
    assert ds.frame_colors == "rgb"
    clip, _ = ds[0]
    assert np.allclose(mean_colour(clip), COLOUR, atol=6), mean_colour(clip)
    err = capsys.readouterr().err
    assert f"stnet: val frame folders of {root}: colours rgb (not the reference's UCF101 frame layout" in err
    assert "set --frame_colors bgr if red and blue are swapped" in err
    swapped = build_dataset(config(frame_colors="bgr"), "val", root=root)  # the user's word wins
    assert np.allclose(mean_colour(swapped[0][0]), COLOUR[::-1], atol=6)
    assert "colours bgr (set by frame_colors)" in capsys.readouterr().err


def test_the_reference_frame_folders_are_detected_as_bgr(tmp_path: Path, capsys) -> None:
    root = write_frame_folders(tmp_path, REFERENCE_NAMES, (171, 128), swap=True)
    ds = build_dataset(config(), "train", root=root)
    assert ds.frame_colors == "bgr"
    assert np.allclose(mean_colour(ds[0][0]), COLOUR, atol=6)
    err = capsys.readouterr().err
    assert "colours bgr (the reference's UCF101 frames: 0000{i}.jpg names and 171x128 JPEGs" in err
    assert "set --frame_colors rgb if these are not" in err
    plain = build_dataset(config(frame_colors="rgb"), "val", root=root)
    assert np.allclose(mean_colour(plain[0][0]), COLOUR[::-1], atol=6)
    cfg = with_frame_colors(config(), ds)  # what train records in its checkpoints
    assert cfg.frame_colors == "bgr"
    assert with_frame_colors(config(frame_colors="rgb"), ds).frame_colors == "rgb"


@pytest.mark.parametrize(
    "names, size",
    [
        (REFERENCE_NAMES, (160, 120)),  # the reference's names, another size
        (OWN_NAMES, (171, 128)),  # the reference's size, %05d names
        (REFERENCE_NAMES[:9], (171, 128)),  # too few frames for the names to tell
    ],
)
def test_partial_evidence_is_not_enough(tmp_path: Path, names: list[str], size: tuple[int, int]) -> None:
    root = write_frame_folders(tmp_path, names, size, swap=False)
    ds = build_dataset(config(), "val", root=root)
    assert ds.frame_colors == "rgb"
    assert np.allclose(mean_colour(ds[0][0]), COLOUR, atol=6)


def test_frame_colors_is_validated() -> None:
    with pytest.raises(ConfigError, match="frame_colors: 'brg' is not allowed; use one of auto, rgb, bgr"):
        config(frame_colors="brg")
