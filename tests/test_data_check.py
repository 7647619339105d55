"""`stnet data check` on a folder of good and bad real files, resuming, and `stnet data stats` of a store."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from stnet import cli, clipstore
from videos import make_bad_files, write_video


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class ``a``: two good videos (H.264 and MPEG-4 AVI); class ``b``: a copy of one, a short one, an
    AVI cut at 85 %, one with garbage in frame 20, and every bad kind of tests/videos.py."""
    root = tmp_path_factory.mktemp("check") / "src"
    write_video(root / "a" / "good.mp4", 40)
    avi = write_video(root / "a" / "good.avi", 40, codec="mpeg4").read_bytes()
    (root / "b").mkdir()
    shutil.copy(root / "a" / "good.mp4", root / "b" / "copy.mp4")
    write_video(root / "b" / "short.mp4", 12)
    (root / "b" / "cut.avi").write_bytes(avi[: int(len(avi) * 0.85)])  # decodes cleanly up to the cut
    movi = avi.index(b"movi")
    chunk = [i for i in range(movi, len(avi)) if avi.startswith(b"00dc", i)][20]  # frame 20's data
    size = int.from_bytes(avi[chunk + 4 : chunk + 8], "little")
    garbage = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    (root / "b" / "corrupt.avi").write_bytes(avi[: chunk + 8] + garbage + avi[chunk + 8 + size :])
    make_bad_files(root / "b", ".mp4")  # empty, truncated, not_a_video, audio_only, no_frames
    return root


def _check(source: Path, out: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    argv = ["data", "check", str(source), "--out", str(out), "--json", "--quiet", "--workers", "1"]
    assert cli.main([*argv, *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_check_finds_every_problem(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _check(source, tmp_path / "out", capsys, "--workers", "2")
    b = source / "b"
    reasons = {Path(u["path"]).name: u["reason"] for u in report["unreadable"]}
    assert reasons == {
        "empty.mp4": "empty file (0 bytes)",
        "truncated.mp4": reasons["truncated.mp4"],
        "not_a_video.mp4": reasons["not_a_video.mp4"],
        "audio_only.mp4": "no video stream (streams: audio)",
        "no_frames.mp4": reasons["no_frames.mp4"],
    }
    assert (
        "truncated or not a video" in reasons["truncated.mp4"] and "no decodable" in reasons["no_frames.mp4"]
    )
    assert report["videos"] == 11 and report["readable"] == 6
    assert report["duplicates"] == [[str(source / "a" / "good.mp4"), str(b / "copy.mp4")]]
    assert report["too_short"] == [
        {"path": str(b / "cut.avi"), "frames": 28, "seconds": 1.12},  # 28 of its 40 frames' packets left
        {"path": str(b / "short.mp4"), "frames": 12, "seconds": 0.48},
    ]
    (suspect,) = report["suspect"]
    assert (
        suspect["path"] == str(b / "cut.avi") and "28 packets, the header announces 40" in suspect["warning"]
    )
    assert report["classes"] == {"b": 9, "a": 2} and report["splits"] == {"train": 11}
    assert report["histograms"]["codec"] == {"h264": 3, "mpeg4": 3}
    assert report["histograms"]["resolution"] == {"64x48": 6} and report["histograms"]["fps"] == {"25": 6}
    assert report["histograms"]["seconds"] == {"0-1 s": 1, "1-2 s": 5}
    assert report["bytes"] == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert json.loads((tmp_path / "out" / "check_report.json").read_text()) == report
    assert (tmp_path / "out" / "check_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    decoded = _check(source, tmp_path / "decoded", capsys, "--decode")  # corruption inside the stream too
    reasons = {Path(u["path"]).name: u["reason"] for u in decoded["unreadable"]}
    assert reasons["corrupt.avi"].startswith("truncated or corrupt: decoding failed after 20 frames")


def test_check_resumes_from_its_results(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first = _check(source, out, capsys)
    assert (first["probed"], first["reused"]) == (11, 0)
    results = out / "check_results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:5]) + lines[5][:30])  # killed while writing the 5th result
    resumed = _check(source, out, capsys)
    assert (resumed["probed"], resumed["reused"]) == (7, 4)
    assert {k: v for k, v in resumed.items() if k not in ("probed", "reused")} == {
        k: v for k, v in first.items() if k not in ("probed", "reused")
    }
    st = (source / "a" / "good.mp4").stat()
    os.utime(source / "a" / "good.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # changed: probed again
    again = _check(source, out, capsys)
    assert (again["probed"], again["reused"]) == (1, 10)


def test_check_of_a_list_and_foreign_outputs(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text("a/good.mp4 walk\nb/short.mp4 run\nb/gone.mp4 run\n")
    (tmp_path / "val.txt").write_text("a/good.mp4 walk\n")  # also in train: one file, not a duplicate
    report = _check(
        source, tmp_path / "out", capsys, "--list", str(listing), "--list", str(tmp_path / "val.txt")
    )
    assert report["videos"] == 3 and report["classes"] == {"walk": 2, "run": 1}
    assert report["missing"] == [{"split": "train", "entry": "b/gone.mp4"}]
    assert report["splits"] == {"train": 2, "val": 1} and report["duplicates"] == []
    pyslowfast = tmp_path / "val.csv"
    pyslowfast.write_text("a/good.avi,0\nb/cut.avi,1\n")  # PySlowFast's comma form
    report = _check(source, tmp_path / "csv", capsys, "--list", f"val={pyslowfast}", "--format", "csv")
    assert report["videos"] == 2 and report["splits"] == {"val": 2} and len(report["suspect"]) == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "check_results.jsonl").write_text("my notes\n")
    argv = ["data", "check", str(source), "--out", str(foreign), "--quiet"]
    assert cli.main(argv) == 1
    assert "is not stnet data check's results file" in capsys.readouterr().err
    assert (foreign / "check_results.jsonl").read_text() == "my notes\n"


def test_stats_of_a_prepared_store(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(source / "a", videos / "a")
    (videos / "b").mkdir()
    shutil.copy(source / "b" / "short.mp4", videos / "b")
    store = tmp_path / "store"
    argv = ["prepare", "list", "--root", str(videos), "--folders", "--out", str(store), "--fps", "12.5"]
    assert cli.main([*argv, "--short-side", "48", "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["data", "stats", str(store), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    clips = sorted(store.rglob("*.stclip"))
    assert stats["videos"] == 3 and stats["frames"] == 20 + 20 + 6  # 25 fps halved
    assert stats["frames_per_video"] == {"min": 6, "median": 20, "mean": 15.33, "max": 20}
    assert stats["bytes"] == {
        "store": sum(c.stat().st_size for c in clips),
        "per_video": stats["bytes"]["per_video"],
    }
    assert stats["fps"] == {"12.5": 3} and stats["resampled"] == 3
    assert stats["classes"] == {"train": {"a": 2, "b": 1}, "val": {}} and stats["unreadable"] == []
    clip = store / "clips" / "b" / "short.mp4.stclip"
    clip.write_bytes(clip.read_bytes()[:-10])
    assert cli.main(["data", "stats", str(store)]) == 0
    text = capsys.readouterr().out
    assert "2 videos" in text and f"unreadable: {clip}: missing or incomplete clip file" in text
    assert not clipstore.is_complete(clip)
