"""The disk budget of a clip store: --fps and --max-frames keep fewer frames, the sampling stays in source
time, the report counts bytes, and older clip files (version 2) still read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stnet import cli, clipstore, prepare
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.fileio import human_bytes
from stnet.sampling import source_index
from videos import barcode_frame, read_barcode, write_video

FPS = 24
FRAMES = 48  # 2 s at 24 fps; bar codes 0..47


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("budget") / "videos"
    write_video(root / "a" / "v.mp4", FRAMES, fps=FPS)
    write_video(root / "b" / "w.mp4", 30, fps=FPS)
    return root


def _prepare(source: Path, out: Path, *flags: str) -> dict:
    argv = ["prepare", "list", "--root", str(source), "--folders", "--out", str(out)]
    assert cli.main([*argv, "--short-side", "48", "--workers", "1", "--quiet", *flags]) == 0
    return json.loads((out / prepare.REPORT).read_text())


def _stored_indices(clip: Path) -> list[int]:
    """The source frame each stored frame of ``clip`` shows (its bar code)."""
    with clipstore.ClipReader(clip) as reader:
        return [read_barcode(image) for image in reader.read_images(range(len(reader)))]


def _sampled_times(clip: Path, recipe: str, views: int) -> list[float]:
    """The source times (seconds) of the frames the eval views of ``clip`` are made of."""
    spec = ClipSpec(recipe, T=3, N=4, target_size=48, short_size=48, mean=(0, 0, 0), std=(1, 1, 1))
    dataset = VideoClipDataset([Sample(clip, 0)], spec, "val", test_views=(views, 1) if views > 1 else None)
    frames = (
        dataset[0][0].numpy().reshape(-1, 3, 48, 48)
    )  # (views·T·N, 3, S, S): channel 3k+c is colour c of frame k
    return [read_barcode(np.moveaxis(f, 0, -1) * 255) / FPS for f in frames]


@pytest.mark.parametrize("recipe", ["kinetics400", "ucf101"])
def test_a_store_at_half_the_rate_samples_the_same_times(
    source: Path, tmp_path_factory: pytest.TempPathFactory, recipe: str
) -> None:
    base = tmp_path_factory.getbasetemp()
    full, half = base / "full", base / "half"
    if not full.exists():
        _prepare(source, full)
        _prepare(source, half, "--fps", "12")
    clip = Path("clips/a/v.mp4.stclip")
    info = clipstore.read_info(half / clip)
    assert (info.num_frames, info.fps, info.source_fps, info.source_frames) == (24, 12.0, 24.0, 48)
    assert _stored_indices(half / clip) == list(range(0, FRAMES, 2))  # every other source frame
    assert clipstore.read_info(full / clip).timeline.resampled is False
    full_times = _sampled_times(full / clip, recipe, views=3)
    half_times = _sampled_times(half / clip, recipe, views=3)
    # each frame is the stored one nearest in time: at most half a stored frame (1/24 s) away
    assert len(full_times) == len(half_times) == 3 * 3 * 4
    assert max(abs(a - b) for a, b in zip(full_times, half_times, strict=True)) <= 0.5 / 12 + 1e-9
    assert full_times[-1] > 1.5  # the views reach the end of the 2-s video, in both stores


def test_max_frames_keeps_the_whole_video_at_a_lower_rate(source: Path, tmp_path: Path) -> None:
    report = _prepare(source, tmp_path / "s", "--max-frames", "10")
    clip = tmp_path / "s" / "clips" / "a" / "v.mp4.stclip"
    info = clipstore.read_info(clip)
    assert (info.num_frames, info.source_frames) == (10, FRAMES)
    assert info.fps == pytest.approx(10 * FPS / FRAMES)  # 5 frames/s over the whole 2 s
    assert _stored_indices(clip) == [source_index(j, info.fps, FPS) for j in range(10)]
    assert _stored_indices(clip)[-1] >= FRAMES - 5  # spread to the end, not the first 10 frames
    assert report["counts"]["train"]["frames"] == 20  # both videos (48 and 30 frames) capped at 10
    assert report["settings"]["max_frames"] == 10


def test_report_counts_source_and_store_bytes(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _prepare(source, tmp_path / "s", "--fps", "12")
    counts = report["bytes"]
    line = f"store {human_bytes(counts['store'])} ({human_bytes(counts['per_video'])} per video)"
    assert line in capsys.readouterr().err
    clips = sorted((tmp_path / "s" / "clips").rglob("*.stclip"))
    videos = sorted(source.rglob("*.mp4"))
    store = sum(c.stat().st_size for c in clips)
    assert report["bytes"] == {
        "source": sum(v.stat().st_size for v in videos),
        "store": store,
        "per_video": round(store / 2),
        "store_to_source": round(store / sum(v.stat().st_size for v in videos), 4),
    }
    again = _prepare(source, tmp_path / "s", "--fps", "12")  # reused clips count the same
    assert again["bytes"] == report["bytes"] and again["counts"]["train"]["reused"] == 2
    assert (
        cli.main(["prepare", "list", "--root", str(source), "--folders", "--out", str(tmp_path / "s")]) == 1
    )


def test_projected_total_is_printed_after_the_first_videos(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "PROJECT_AFTER", 1)
    report = _prepare(source, tmp_path / "s")
    err = capsys.readouterr().err
    sizes = {c.stat().st_size for c in (tmp_path / "s" / "clips").rglob("*.stclip")}
    first = next(size for size in sizes if f"projected store for 2 videos: {human_bytes(2 * size)}" in err)
    assert "prepare: the first 1 videos take" in err and first < report["bytes"]["store"]


def test_version_2_clips_still_sample_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "v.stclip"
    with clipstore.ClipWriter(path, 12.0) as writer:
        writer.source_fps, writer.source_frames = 24.0, 20  # a version 3 file at half the rate
        for i in range(10):
            writer.add_image(Image.fromarray(barcode_frame(i)))
    assert clipstore.read_info(path).timeline.sampled_frames == 20
    data = bytearray(path.read_bytes()[: -clipstore.RATE_SIZE])  # version 2: no rate record
    data[8:12] = (2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert clipstore.is_complete(path)
    info = clipstore.read_info(path)
    assert (info.version, info.source_fps, info.source_frames) == (2, 12.0, 10)
    assert info.timeline.sampled_frames == 10 and not info.timeline.resampled
    with clipstore.ClipReader(path) as reader:
        assert [read_barcode(im) for im in reader.read_images([9, 0])] == [9, 0]
