"""`stnet prepare hmdb51`, `prepare ssv2` and the list formats of `prepare list` (MMAction2 video and
rawframe lists, PySlowFast CSVs) on real files encoded in the test: MPEG-4 AVI, VP9 WebM, JPEG frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sources import HMDB_CLASSES, HMDB_VIDEOS, SSV2_LABELS, write_frame_folder, write_hmdb51, write_ssv2
from stnet import cli, clipstore
from stnet.config import load_config
from videos import barcode_frame, read_barcode, write_video


def _run(*argv: str) -> int:
    return cli.main(["prepare", *argv, "--quiet", "--workers", "1"])


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


def _codes(clip: Path) -> list[int]:
    with clipstore.ClipReader(clip) as reader:
        return [read_barcode(np.asarray(im)) for im in reader.read_images(range(len(reader)))]


def _error(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("stnet: error: ")
    return lines[-1]


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hmdb51(tmp_path_factory.mktemp("hmdb"))


def test_hmdb51_official_split(hmdb: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    source, splits = str(hmdb / "hmdb51"), str(hmdb / "splits")
    assert _run("hmdb51", "--source", source, "--splits", splits, "--out", str(out)) == 0
    assert "split files of 3 classes; the official HMDB51 has 51" in capsys.readouterr().err
    assert (out / "classes.txt").read_text() == "brush_hair 0\nclimb_stairs 1\nsword 2\n"
    train = (out / "train.txt").read_text().splitlines()
    val = (out / "val.txt").read_text().splitlines()
    assert train == [
        f"clips/{name}/{HMDB_VIDEOS[name][0]}.stclip {c}" for c, name in enumerate(HMDB_CLASSES)
    ]  # code 1; '#' at the start of a split file's line is a name, not a comment
    assert val == [
        f"clips/{name}/{HMDB_VIDEOS[name][1]}.stclip {c}" for c, name in enumerate(HMDB_CLASSES[:2])
    ]
    report = _report(out)
    assert report["missing"] == [{"split": "val", "entry": f"sword/{HMDB_VIDEOS['sword'][1]}"}]
    assert report["unused"] == 3
    assert report["unused_videos"] == [f"{name}/{HMDB_VIDEOS[name][2]}" for name in HMDB_CLASSES]
    assert report["counts"]["val"] == {**report["counts"]["val"], "listed": 3, "prepared": 2, "missing": 1}
    assert _codes(out / train[1].rsplit(" ", 1)[0]) == list(range(13))  # every frame decoded, in order

    out2 = tmp_path / "out2"
    assert _run("hmdb51", "--source", source, "--splits", splits, "--split", "2", "--out", str(out2)) == 0
    assert len((out2 / "train.txt").read_text().splitlines()) == 5  # sword_b is missing
    assert [line.split("/")[2] for line in (out2 / "val.txt").read_text().splitlines()] == [
        f"{HMDB_VIDEOS[name][0]}.stclip {c}" for c, name in enumerate(HMDB_CLASSES)
    ]
    assert _report(out2)["unused"] == 0

    code = _run(
        "hmdb51", "--source", source, "--splits", splits, "--split", "3", "--out", str(tmp_path / "o3")
    )
    assert code == 1 and "holds no <class>_test_split3.txt files" in _error(capsys)
    bad = tmp_path / "bad_splits"
    bad.mkdir()
    (bad / "sword_test_split1.txt").write_text("sword_a_sword_f_cm_np1_ri_med_0.avi 3\n")
    assert _run("hmdb51", "--source", source, "--splits", str(bad), "--out", str(tmp_path / "o4")) == 1
    assert f"{bad / 'sword_test_split1.txt'}:1: expected '<video>.avi 0|1|2'" in _error(capsys)


# --- Something-Something V2 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ssv2(tmp_path_factory.mktemp("ssv2"))


def test_ssv2_json_and_vp9_webm(ssv2: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = ["ssv2", "--source", str(ssv2 / "videos"), "--labels", str(ssv2 / "labels.json")]
    split_files = ["--train", str(ssv2 / "train.json"), "--val", str(ssv2 / "validation.json")]
    assert _run(*argv, *split_files, "--out", str(out), "--short-side", "32") == 0
    names = list(SSV2_LABELS)
    assert (out / "classes.txt").read_text() == "".join(f"{n} {i}\n" for i, n in enumerate(names))
    assert (out / "train.txt").read_text() == (
        "clips/101.webm.stclip 0\nclips/102.webm.stclip 1\nclips/103.webm.stclip 2\n"
    )
    assert (out / "val.txt").read_text() == "clips/201.webm.stclip 3\n"
    report = _report(out)
    assert report["missing"] == [{"split": "train", "entry": "104.webm"}]
    (refused,) = report["failures"]
    assert refused["source"] == "105" and "'Waving something around'" in refused["reason"]
    for i, clip in enumerate(["101", "102", "103"]):
        assert _codes(out / f"clips/{clip}.webm.stclip") == list(range(8 + i))  # VP9 frames, all, in order
    with clipstore.ClipReader(out / "clips/201.webm.stclip") as reader:
        assert (reader.info.width, reader.info.height, reader.info.fps) == (43, 32, 25.0)

    assert _run(*argv, "--out", str(tmp_path / "o2")) == 1
    assert "give --train and/or --val" in _error(capsys)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "1", "template": "x"},\n oops]')
    assert _run(*argv, "--train", str(broken), "--out", str(tmp_path / "o3")) == 1
    assert f"{broken}:2:2: not valid JSON" in _error(capsys)


def test_ssv2_config_does_not_flip() -> None:
    cfg = load_config("ssv2")
    assert (cfg.flip, cfg.class_num) == (False, 174)
    assert load_config("hmdb51").class_num == 51


# --- prepare list: MMAction2 rawframe lists, PySlowFast CSVs ------------------------------------------


def test_rawframe_lists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "rawframes"
    write_frame_folder(root / "jump/v_jump_01", 7)
    write_frame_folder(root / "run/v_run_01", 5)
    write_frame_folder(root / "run/v_run_02", 4)  # the list says 6: its last frame is not there
    gap = write_frame_folder(root / "run/v_run_03", 40)
    (gap / "img_00017.jpg").unlink()  # first and last there: planned, and failed when converted
    (tmp_path / "train.txt").write_text(
        "jump/v_jump_01 7 0\nrun/v_run_01 5 1\nrun/v_run_02 6 1\nrun/gone 3 1\nrun/v_run_03 40 1\n"
    )
    (tmp_path / "val.txt").write_text("run/v_run_01 5 1\n")
    lists = ["--list", str(tmp_path / "train.txt"), "--list", str(tmp_path / "val.txt")]
    out = tmp_path / "out"
    assert _run("list", "--root", str(root), *lists, "--frames-fps", "12", "--out", str(out)) == 0
    assert (out / "train.txt").read_text() == "clips/jump/v_jump_01.stclip 0\nclips/run/v_run_01.stclip 1\n"
    assert (out / "classes.txt").read_text() == "jump 0\nrun 1\n"
    report = _report(out)
    assert report["split"]["formats"] == {
        str(tmp_path / "train.txt"): "rawframes",
        str(tmp_path / "val.txt"): "rawframes",
    }
    assert report["missing"] == [{"split": "train", "entry": "run/gone"}]
    refused, failed = report["failures"]
    assert "lists 6 frames, but img_00006.jpg is not there" in refused["reason"]
    assert failed == {
        "split": "train",
        "source": str(gap),
        "reason": "lists 40 frames, but img_00017.jpg is not there",
    }
    assert report["counts"]["train"] == {
        **report["counts"]["train"],
        "listed": 5,
        "prepared": 2,
        "failed": 2,
        "missing": 1,
        "frames": 12,
    }
    assert not (out / "clips/run/v_run_03.stclip").exists()
    frame_bytes = sum(
        p.stat().st_size for d in ("jump/v_jump_01", "run/v_run_01") for p in (root / d).iterdir()
    )
    assert report["bytes"]["source"] == frame_bytes  # the frames' bytes, not the folders' entries
    assert _codes(out / "clips/jump/v_jump_01.stclip") == list(range(7))
    with clipstore.ClipReader(out / "clips/run/v_run_01.stclip") as reader:
        assert (len(reader), reader.info.fps) == (5, 12.0)
    capsys.readouterr()

    # another frame-name template, chosen format; a rerun reuses the clips of unchanged folders
    other = tmp_path / "frames6"
    write_frame_folder(other / "a", 3, "{:06d}.jpg")
    (tmp_path / "l.txt").write_text("a 3 0\n")
    argv = ["list", "--root", str(other), "--list", f"train={tmp_path / 'l.txt'}", "--format", "rawframes"]
    assert _run(*argv, "--filename-tmpl", "{:06d}.jpg", "--out", str(tmp_path / "o6")) == 0
    assert _codes(tmp_path / "o6/clips/a.stclip") == [0, 1, 2]
    assert _run(*argv, "--filename-tmpl", "{:06d}.jpg", "--out", str(tmp_path / "o6")) == 0
    report = _report(tmp_path / "o6")
    assert report["counts"]["train"]["reused"] == 1
    assert report["bytes"]["source"] == sum(p.stat().st_size for p in (other / "a").iterdir())
    Image.fromarray(barcode_frame(3)).save(other / "a/000004.jpg")  # a frame added: converted again
    (tmp_path / "l.txt").write_text("a 4 0\n")
    assert _run(*argv, "--filename-tmpl", "{:06d}.jpg", "--out", str(tmp_path / "o6")) == 0
    assert _codes(tmp_path / "o6/clips/a.stclip") == [0, 1, 2, 3]
    (tmp_path / "l.txt").write_text("a 2 0\n")  # fewer than the folder holds: exactly those, converted again
    assert _run(*argv, "--filename-tmpl", "{:06d}.jpg", "--out", str(tmp_path / "o6")) == 0
    assert _report(tmp_path / "o6")["counts"]["train"]["reused"] == 0
    assert _codes(tmp_path / "o6/clips/a.stclip") == [0, 1]
    assert _run(*argv, "--filename-tmpl", "frame.jpg", "--out", str(tmp_path / "o7")) == 1
    assert "--filename-tmpl 'frame.jpg' must name one file per frame number" in _error(capsys)


def test_frame_folder_in_a_video_list_fails_at_a_gap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_frame_folder(root / "a/whole", 5)
    gap = write_frame_folder(root / "a/gap", 6)
    (gap / "img_00003.jpg").unlink()
    (tmp_path / "l.txt").write_text("a/whole 0\na/gap 0\n")  # no frame count: read up to the first gap
    out = tmp_path / "out"
    assert _run("list", "--root", str(root), "--list", str(tmp_path / "l.txt"), "--out", str(out)) == 0
    assert (out / "train.txt").read_text() == "clips/a/whole.stclip 0\n"
    assert _codes(out / "clips/a/whole.stclip") == list(range(5))
    (failure,) = _report(out)["failures"]
    assert failure["source"] == str(gap)
    assert failure["reason"] == (
        "img_00003.jpg is not there, but img_00004.jpg is: a gap in the frame numbers after 2 frames"
    )


@pytest.mark.parametrize("form", ["space", "comma"])
def test_pyslowfast_csvs(form: str, tmp_path: Path) -> None:
    root = tmp_path / "videos"
    write_video(root / "a b/x.mp4", 6)  # a path with a space
    write_video(root / "c/y,z.mp4", 5)  # and one with a comma
    sep = " " if form == "space" else ","
    train = tmp_path / "train.csv"
    train.write_text(f"a b/x.mp4{sep}1\nc/y,z.mp4{sep}0\n")
    (tmp_path / "val.csv").write_text(f"c/y,z.mp4{sep}0\n")
    lists = ["--list", str(train), "--list", str(tmp_path / "val.csv")]
    outs = []
    for fmt in ("auto", "video" if form == "space" else "csv"):
        out = tmp_path / f"out_{fmt}"
        assert _run("list", "--root", str(root), *lists, "--format", fmt, "--out", str(out)) == 0
        assert _report(out)["split"]["formats"][str(train)] == ("video" if form == "space" else "csv")
        outs.append((out / "train.txt").read_text())
    assert outs[0] == outs[1] == "clips/a b/x.mp4.stclip 1\nclips/c/y,z.mp4.stclip 0\n"
    assert _codes(tmp_path / "out_auto/clips/a b/x.mp4.stclip") == list(range(6))
