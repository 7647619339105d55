"""`stnet data check` on real files: a folder of good and bad videos, resuming, each form prepare reads
(UCF101 split lists, Kinetics CSVs, HMDB51 split files, SSv2 JSON, rawframe lists), and `stnet data
stats` of a store."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sources import (
    HMDB_CLASSES,
    HMDB_VIDEOS,
    SSV2_LABELS,
    UCF_CLASSES,
    ucf_file_class,
    write_frame_folder,
    write_hmdb51,
    write_kinetics,
    write_ssv2,
    write_ucf101,
)
from stnet import cli, clipstore, datacheck
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
    assert report["classes"] == {"b": 9, "a": 2} and report["plan"] == {"form": "folder"}
    assert report["splits"] == {
        "train": {
            "videos": 11,
            "readable": 6,
            "unreadable": 5,
            "too_short": 2,
            "missing": 0,
            "refused": 0,
            "classes": {"b": 9, "a": 2},
        }
    }
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
    assert report["missing"] == [{"split": "train", "entry": "b/gone.mp4"}] and report["duplicates"] == []
    assert {s: (c["videos"], c["missing"]) for s, c in report["splits"].items()} == {
        "train": (2, 1),
        "val": (1, 0),
    }
    pyslowfast = tmp_path / "val.csv"
    pyslowfast.write_text("a/good.avi,0\nb/cut.avi,1\n")  # PySlowFast's comma form
    report = _check(source, tmp_path / "csv", capsys, "--list", f"val={pyslowfast}", "--format", "csv")
    assert report["videos"] == 2 and list(report["splits"]) == ["val"] and len(report["suspect"]) == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "check_results.jsonl").write_text("my notes\n")
    argv = ["data", "check", str(source), "--out", str(foreign), "--quiet"]
    assert cli.main(argv) == 1
    assert "is not stnet data check's results file" in capsys.readouterr().err
    assert (foreign / "check_results.jsonl").read_text() == "my notes\n"


# --- the forms prepare reads --------------------------------------------------------------------------


def _form(out: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    """``stnet data check FORM ...`` into ``out``; the JSON report."""
    full = ["data", "check", *argv, "--out", str(out), "--json", "--quiet", "--workers", "1"]
    assert cli.main(full) == 0
    return json.loads(capsys.readouterr().out)


def test_check_ucf101_split_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ucf = write_ucf101(tmp_path)

    def video(c: int, g: int) -> str:
        return str(ucf / UCF_CLASSES[c] / f"v_{ucf_file_class(UCF_CLASSES[c])}_g{g:02d}_c01.avi")

    out = tmp_path / "out"
    report = _form(out, capsys, "ucf101", "--source", str(ucf), "--min-frames", "25")
    assert report["plan"] == {
        "form": "ucf101",
        "kind": "official",
        "split": 1,
        "annotations": str(ucf / "ucfTrainTestlist"),
    }
    assert report["videos"] == 12 and report["readable"] == 11 and report["frame_folders"] == 0
    assert report["unreadable"] == [{"path": video(2, 4), "reason": "empty file (0 bytes)"}]
    assert report["missing"] == [{"split": "train", "entry": "YoYo/v_YoYo_g05_c01.avi"}]
    assert report["refused"] == []
    each = dict.fromkeys(UCF_CLASSES, 2)
    assert report["splits"] == {
        "train": {"videos": 6, "readable": 5, "unreadable": 1, "too_short": 2, "missing": 1, "refused": 0,
                  "classes": each},
        "val": {"videos": 6, "readable": 6, "unreadable": 0, "too_short": 3, "missing": 0, "refused": 0,
                "classes": each},
    }  # fmt: skip
    assert {t["path"]: t["frames"] for t in report["too_short"]} == {  # 20 + 3 * class + group frames
        video(0, 3): 23,
        video(0, 4): 24,
        video(0, 1): 21,
        video(0, 2): 22,
        video(1, 1): 24,
    }
    # bar codes 0..23 (and 0..26) encoded twice give the same bytes, whatever the file is called
    assert report["duplicates"] == [[video(0, 4), video(1, 1)], [video(1, 4), video(2, 1)]]
    assert report["histograms"] == {
        "seconds": {"0-1 s": 5, "1-2 s": 6},
        "fps": {"25": 11},
        "resolution": {"64x48": 11},
        "codec": {"mpeg4": 11},
    }
    assert report["bytes"] == sum(p.stat().st_size for p in ucf.glob("*/*.avi"))

    # prepare's random split by actor group, into the same folder: every result is reused
    report = _form(out, capsys, "ucf101", "--source", str(ucf), "--random-split", "0.5")
    assert report["plan"]["kind"] == "random-by-group" and report["plan"]["train_groups"] == ["g01", "g03"]
    assert {s: c["videos"] for s, c in report["splits"].items()} == {"train": 6, "val": 6}
    assert (report["probed"], report["reused"]) == (0, 12) and report["missing"] == []


def test_check_kinetics_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, (train, val) = write_kinetics(tmp_path)
    report = _form(
        tmp_path / "out", capsys, "kinetics", "--csv", str(train), "--csv", str(val), "--source", str(source)
    )
    assert report["videos"] == report["readable"] == 5 and report["plan"]["kind"] == "csv"
    assert report["classes"] == {"abseiling": 2, "zumba": 2, "air drumming": 1}
    assert {s: (c["videos"], c["missing"]) for s, c in report["splits"].items()} == {
        "train": (3, 1),
        "val": (1, 1),
        "test": (1, 0),  # a test row with a label
    }
    assert report["missing"] == [
        {"split": "train", "entry": "missingvid01_000003_000013"},
        {"split": "val", "entry": "missingvid02_000000_000010"},
    ]
    assert report["test_rows_without_labels"] == 0 and report["histograms"]["codec"] == {"h264": 5}
    assert {Path(t["path"]).stem[:3]: t["frames"] for t in report["too_short"]} == {
        "aaa": 24,
        "bbb": 30,
        "ccc": 26,
        "ddd": 22,
        "eee": 21,
    }


def test_check_hmdb51_split_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_hmdb51(tmp_path)
    out = tmp_path / "out"
    argv = ["hmdb51", "--source", str(root / "hmdb51"), "--splits", str(root / "splits")]
    assert cli.main(["data", "check", *argv, "--out", str(out), "--quiet", "--workers", "1"]) == 0
    printed = capsys.readouterr()
    assert "holds split files of 3 classes; the official HMDB51 has 51" in printed.err
    lines = printed.out.splitlines()
    assert (
        "  train: 3 videos in 3 classes, 3 readable, 0 unreadable, 3 too short, 0 missing, 0 refused" in lines
    )
    assert (
        "  val: 2 videos in 2 classes, 2 readable, 0 unreadable, 2 too short, 1 missing, 0 refused" in lines
    )
    assert "  unused by this split: 3 videos" in lines
    report = json.loads((out / "check_report.json").read_text())
    assert report["unused"] == 3
    assert report["unused_videos"] == [f"{name}/{HMDB_VIDEOS[name][2]}" for name in HMDB_CLASSES]
    assert report["missing"] == [{"split": "val", "entry": f"sword/{HMDB_VIDEOS['sword'][1]}"}]
    assert report["splits"]["val"]["classes"] == {"brush_hair": 1, "climb_stairs": 1}
    assert report["histograms"]["codec"] == {"mpeg4": 5}

    # split 2 lists every video (the unused ones of split 1 are probed now, the others reused)
    report = _form(out, capsys, *argv, "--split", "2")
    assert (report["probed"], report["reused"]) == (3, 5) and report["unused"] == 0
    assert {s: (c["videos"], c["missing"]) for s, c in report["splits"].items()} == {
        "train": (5, 1),
        "val": (3, 0),
    }


def test_check_ssv2_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_ssv2(tmp_path)
    videos = root / "videos"
    report = _form(
        tmp_path / "out",
        capsys,
        "ssv2",
        "--source",
        str(videos),
        "--labels",
        str(root / "labels.json"),
        "--train",
        str(root / "train.json"),
        "--val",
        str(root / "validation.json"),
    )
    assert report["videos"] == report["readable"] == 4 and report["classes"] == dict.fromkeys(SSV2_LABELS, 1)
    assert report["histograms"]["codec"] == {"vp9": 4}
    assert report["missing"] == [{"split": "train", "entry": "104.webm"}]
    (refused,) = report["refused"]  # 105.webm is there, but its template is no class: not probed
    assert refused["source"] == "105" and "'Waving something around'" in refused["reason"]
    assert {s: (c["videos"], c["missing"], c["refused"]) for s, c in report["splits"].items()} == {
        "train": (3, 1, 1),
        "val": (1, 0, 0),
    }
    assert {Path(t["path"]).name: t["frames"] for t in report["too_short"]} == {
        "101.webm": 8,
        "102.webm": 9,
        "103.webm": 10,
        "201.webm": 12,
    }


def test_check_rawframe_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "frames"
    write_frame_folder(root / "jump/j1", 7)
    shutil.copytree(root / "jump/j1", root / "jump/j1copy")
    j2 = write_frame_folder(root / "jump/j2", 4, size=(24, 32))  # one frame more than listed
    (j2 / "img_00003.jpg").write_bytes(b"not a jpeg")  # found by --decode only
    r1 = write_frame_folder(root / "run/r1", 6)
    (r1 / "img_00003.jpg").unlink()  # a gap: prepare fails this folder
    write_frame_folder(root / "run/r2", 5)  # listed with 6: its last frame is not there
    bad = write_frame_folder(root / "run/bad", 3)
    (bad / "img_00001.jpg").write_bytes((bad / "img_00001.jpg").read_bytes()[:100])  # cut first frame
    listing = tmp_path / "train.txt"
    listing.write_text(
        "jump/j1 7 0\njump/j1copy 7 0\njump/j2 3 0\nrun/r1 6 1\nrun/r2 6 1\nrun/gone 4 1\nrun/bad 3 1\n"
    )
    out = tmp_path / "out"
    report = _form(out, capsys, "list", "--root", str(root), "--list", str(listing), "--min-frames", "5")
    folder = {name: str(root / name) for name in ("jump/j1", "jump/j1copy", "jump/j2", "run/r1", "run/bad")}
    assert report["videos"] == report["frame_folders"] == 5 and report["readable"] == 4
    (unreadable,) = report["unreadable"]
    assert unreadable["path"] == folder["run/bad"]
    assert unreadable["reason"].startswith("frame img_00001.jpg: not a readable image")
    assert report["missing_frames"] == [
        {"path": folder["run/r1"], "listed": 6, "frames": 2, "missing": [3], "missing_count": 1}
    ]
    assert report["too_short"] == [
        {"path": folder["jump/j2"], "frames": 3, "seconds": None},  # the 3 listed: what prepare reads
        {"path": folder["run/r1"], "frames": 2, "seconds": None},
    ]
    assert report["suspect"] == [
        {
            "path": folder["jump/j2"],
            "warning": "4 frames from img_00001.jpg on, the list says 3 (prepare reads 3)",
        }
    ]
    assert (
        f"  missing frames: {folder['run/r1']}: 1 of 6 listed (3); prepare fails this folder "
        "(it reads every listed frame)" in datacheck.summary_lines(report)
    )
    assert report["duplicates"] == [[folder["jump/j1"], folder["jump/j1copy"]]]
    assert report["missing"] == [{"split": "train", "entry": "run/gone"}]
    (refused,) = report["refused"]
    assert "lists 6 frames, but img_00006.jpg is not there" in refused["reason"]
    assert report["classes"] == {"jump": 3, "run": 2}
    assert report["histograms"]["resolution"] == {"64x48": 3, "32x24": 1}
    assert report["histograms"]["codec"] == {"jpeg": 4} and report["histograms"]["fps"] == {}
    assert report["bytes"] == sum(p.stat().st_size for d in folder.values() for p in Path(d).iterdir())

    # SOURCE --list reads the same list; --decode reads every frame and finds j2's bad third one
    decoded = _form(out, capsys, str(root), "--list", str(listing), "--decode")
    assert (decoded["probed"], decoded["reused"]) == (5, 0) and decoded["plan"]["form"] == "list"
    reasons = {u["path"]: u["reason"] for u in decoded["unreadable"]}
    assert reasons[folder["jump/j2"]].startswith("frame img_00003.jpg: not a readable image")
    listing.write_text(
        listing.read_text().replace("jump/j2 3 0", "jump/j2 4 0")
    )  # another count: probed again
    again = _form(out, capsys, str(root), "--list", str(listing))
    assert (again["probed"], again["reused"]) == (1, 4) and again["suspect"] == []


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
