"""Issue 13 item 15: a video's display matrix (phone videos) is applied when decoding, everywhere.

Real encoded videos carry the rotation as the container's display matrix (what phones write); every
decoding path of stnet (prepare's ``iter_frames``, training's and predict's ``read_frames``, the clip
store ``stnet prepare`` writes) must give the frames a player shows, compared here with the source frames
turned by NumPy. Before the fix the frames came out as stored: sideways, with width and height swapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stnet import cli, clipstore
from stnet.video import iter_frames, read_frames
from videos import HEIGHT, WIDTH, write_video


def quadrants(index: int) -> np.ndarray:
    """An RGB frame with four differently coloured quadrants (no symmetry survives a turn or a flip)
    and a brightness that tells frames apart."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    h, w = HEIGHT // 2, WIDTH // 2
    frame[:h, :w] = (220, 30, 30)
    frame[:h, w:] = (30, 220, 30)
    frame[h:, :w] = (30, 30, 220)
    frame[h:, w:] = (220, 220, 30)
    frame[:4, :4] = 40 + 20 * index  # a corner marker for the frame index
    return frame


SOURCE = [quadrants(i) for i in range(6)]

# (rotate counter-clockwise, hflip) → how a player shows a frame (FFmpeg's autorotate filters)
CASES = {
    "rot90": (90, False, lambda f: np.rot90(f, 1)),
    "rot-90": (-90, False, lambda f: np.rot90(f, -1)),
    "rot180": (180, False, lambda f: np.rot90(f, 2)),
    "hflip": (0, True, lambda f: f[:, ::-1]),
    "rot90+hflip": (90, True, lambda f: np.rot90(f, -1)[::-1]),  # FFmpeg: transpose=clock_flip
}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < 6


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_decoded_frames_are_upright(tmp_path: Path, name: str, suffix: str) -> None:
    rotate, hflip, shown = CASES[name]
    path = write_video(tmp_path / f"phone{suffix}", 0, frames=SOURCE, rotate=rotate, hflip=hflip)
    frames = [np.asarray(image) for image in iter_frames(path)]
    assert len(frames) == len(SOURCE)
    for got, source in zip(frames, SOURCE, strict=True):
        assert close(got, shown(source)), name
    picked, total = read_frames(path, [1, 4])
    assert total is None and sorted(picked) == [1, 4]
    for i, image in picked.items():
        assert close(np.asarray(image), shown(SOURCE[i]))


def test_a_video_without_a_display_matrix_is_unchanged(tmp_path: Path) -> None:
    path = write_video(tmp_path / "plain.mp4", 0, frames=SOURCE)
    for got, source in zip(iter_frames(path), SOURCE, strict=True):
        assert close(np.asarray(got), source)


def test_prepare_stores_a_phone_video_upright(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    write_video(videos / "a" / "phone.mp4", 0, frames=SOURCE, rotate=-90)  # portrait, as phones record
    write_video(videos / "b" / "plain.mp4", 0, frames=SOURCE)
    (tmp_path / "train.txt").write_text("a/phone.mp4 0\nb/plain.mp4 1\n")
    out = tmp_path / "data"
    argv = ["prepare", "list", "--list", f"train={tmp_path / 'train.txt'}", "--root", str(videos)]
    argv += ["--out", str(out), "--short-side", str(HEIGHT), "--quality", "95", "--workers", "1", "--quiet"]
    code = cli.main(argv)
    assert code == 0
    clip = next((out / "clips").rglob("phone*.stclip"))
    with clipstore.ClipReader(clip) as reader:
        assert (reader.info.width, reader.info.height) == (HEIGHT, WIDTH)  # portrait
        stored = reader.read_images(list(range(len(SOURCE))))
    for got, source in zip(stored, SOURCE, strict=True):
        assert close(got, np.rot90(source, -1))


class _Decode(torch.utils.data.Dataset):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        frames, _ = read_frames(self.path, [index])
        return torch.from_numpy(np.asarray(frames[index]).copy())


def test_loader_workers_forked_after_decoding_a_phone_video_run(tmp_path: Path) -> None:
    """Reading the display matrix must leave no PyAV garbage behind: with it, DataLoader workers forked
    later hung (here the loader's timeout turns a hang into a failure)."""
    path = write_video(tmp_path / "phone.mp4", 0, frames=SOURCE, rotate=90)
    assert len(list(iter_frames(path))) == len(SOURCE)
    read_frames(path, [0, 2])
    loader = torch.utils.data.DataLoader(
        _Decode(path), batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(2, WIDTH, HEIGHT, 3)] * 2
