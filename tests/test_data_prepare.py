"""`stnet prepare` on real tiny datasets encoded in the test: UCF101, Kinetics, lists, bad files, reruns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sources import UCF_CLASSES, ucf_frames, write_kinetics, write_ucf101
from stnet import cli, clipstore, prepare
from videos import make_bad_files, read_barcode, write_video


@pytest.fixture(scope="module")
def ucf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ucf101(tmp_path_factory.mktemp("ucf"))


def _run(*argv: str) -> int:
    return cli.main(["prepare", *argv, "--quiet"])


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


def _lines(path: Path) -> list[tuple[str, int]]:
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in path.read_text().splitlines()]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_ucf101_official_split(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = _tree(ucf)
    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--workers", "1") == 0
    assert _tree(ucf) == before  # the source is never modified

    assert (out / "classes.txt").read_text() == "ApplyEyeMakeup 0\nHandstandPushups 1\nYoYo 2\n"
    train, val = _lines(out / "train.txt"), _lines(out / "val.txt")
    assert len(train) == 5 and len(val) == 6
    assert ("clips/HandstandPushups/v_HandStandPushups_g03_c01.avi.stclip", 1) in train
    assert all("_g03_" in p or "_g04_" in p for p, _ in train)
    assert all("_g01_" in p or "_g02_" in p for p, _ in val)

    report = _report(out)
    assert report["complete"] and report["split"]["kind"] == "official" and report["split"]["split"] == 1
    assert report["counts"]["train"] == {
        "listed": 7,
        "found": 6,
        "prepared": 5,
        "reused": 0,
        "failed": 1,
        "missing": 1,
        "frames": report["counts"]["train"]["frames"],
    }
    assert report["counts"]["val"]["prepared"] == 6 and report["counts"]["val"]["failed"] == 0
    assert report["missing"] == [{"split": "train", "entry": "YoYo/v_YoYo_g05_c01.avi"}]
    (failure,) = report["failures"]
    assert failure["source"].endswith("v_YoYo_g04_c01.avi") and "empty file" in failure["reason"]
    assert report["settings"] == {
        "short_side": 128,
        "fixed_aspect": False,
        "quality": 90,
        "keep_partial": False,
        "fps": None,
        "max_frames": None,
        "filename_tmpl": "img_{:05}.jpg",
        "frames_fps": 30.0,
    }

    # every frame present, in order, resized keeping the aspect (64x48 -> 171x128)
    for rel, label in train + val:
        with clipstore.ClipReader(out / rel) as reader:
            assert (reader.info.width, reader.info.height) == (171, 128)
            cls = UCF_CLASSES[label]
            group = int(rel.split("_g")[1][:2])
            assert len(reader) == ucf_frames(UCF_CLASSES.index(cls), group)
            codes = [read_barcode(np.asarray(im)) for im in reader.read_images(range(len(reader)))]
            assert codes == list(range(len(reader)))


def test_ucf101_rerun_is_idempotent_and_survives_a_kill(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--workers", "1") == 0
    clips = _tree(out / "clips")
    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--workers", "1") == 0
    assert _tree(out / "clips") == clips  # nothing rewritten
    report = _report(out)
    assert report["counts"]["train"]["reused"] == 5 and report["counts"]["val"]["reused"] == 6

    # a killed run: a temp file left behind, a clip cut short, one with its header never written
    victim = out / "clips/YoYo/v_YoYo_g01_c01.avi.stclip"
    leftover = victim.with_name(f".{victim.name}.x1y2z3.tmp")
    shutil.copy(victim, leftover)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    zeroed = out / "clips/YoYo/v_YoYo_g02_c01.avi.stclip"
    data = zeroed.read_bytes()
    zeroed.write_bytes(b"\0" * clipstore.HEADER_SIZE + data[clipstore.HEADER_SIZE :])
    assert not clipstore.is_complete(victim) and not clipstore.is_complete(zeroed)

    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--workers", "1") == 0
    assert not leftover.exists()
    assert clipstore.is_complete(victim) and clipstore.is_complete(zeroed)
    report = _report(out)
    assert report["counts"]["val"]["reused"] == 4 and report["counts"]["val"]["prepared"] == 6
    assert report["leftovers_removed"] == 1
    with clipstore.ClipReader(victim) as reader:
        assert [read_barcode(np.asarray(im)) for im in reader.read_images(range(len(reader)))] == list(
            range(len(reader))
        )


def test_ucf101_other_settings_need_another_folder(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--workers", "1") == 0
    assert _run("ucf101", "--source", str(ucf), "--out", str(out), "--short-side", "64") == 1


def test_ucf101_random_split_by_group_and_fixed_aspect(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _run(
        "ucf101",
        "--source",
        str(ucf),
        "--out",
        str(out),
        "--random-split",
        "0.5",
        "--seed",
        "3",
        "--fixed-aspect",
        "--short-side",
        "64",
        "--workers",
        "2",
    )
    assert code == 0
    report = _report(out)
    split = report["split"]
    assert split["kind"] == "random-by-group" and split["seed"] == 3
    assert len(split["train_groups"]) == 2 and not set(split["train_groups"]) & set(split["val_groups"])
    # labels follow the reference: case-sensitive sorted() folder names
    assert (out / "classes.txt").read_text() == "ApplyEyeMakeup 0\nHandstandPushups 1\nYoYo 2\n"
    for name, groups in (("train", split["train_groups"]), ("val", split["val_groups"])):
        for rel, _ in _lines(out / f"{name}.txt"):
            assert rel.split("_")[-2] in groups  # no actor group on both sides
    counts = report["counts"]
    assert counts["train"]["prepared"] + counts["val"]["prepared"] == 11  # 12 videos, one empty
    rel = _lines(out / "train.txt")[0][0]
    assert (clipstore.read_info(out / rel).width, clipstore.read_info(out / rel).height) == (85, 64)


def test_ucf101_without_annotations_asks_for_them(tmp_path: Path) -> None:
    write_video(tmp_path / "src/Archery/v_Archery_g01_c01.avi", 20, codec="mpeg4")
    code = _run("ucf101", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()


def test_kinetics_csv(tmp_path: Path) -> None:
    source, _ = write_kinetics(tmp_path)
    out = tmp_path / "out"
    code = _run(
        "kinetics",
        "--csv",
        str(tmp_path / "train.csv"),
        "--csv",
        str(tmp_path / "val.csv"),
        "--source",
        str(source),
        "--out",
        str(out),
        "--workers",
        "1",
        "--short-side",
        "32",
    )
    assert code == 0
    # exactly the reference's generate_label: sorted class names of the train CSV, "<name> <index>"
    assert (out / "classes.txt").read_text() == "abseiling 0\nair drumming 1\nzumba 2\n"
    assert _lines(out / "train.txt") == [
        ("clips/air drumming/aaaaaaaaaaa_000010_000020.mp4.stclip", 1),
        ("clips/abseiling/bbbbbbbbbbb_000000_000010.mp4.stclip", 0),
        ("clips/ccccccccccc_000005_000015.mp4.stclip", 2),
    ]
    assert _lines(out / "val.txt") == [("clips/val/ddddddddddd_000001_000011.mp4.stclip", 0)]
    report = _report(out)
    assert report["counts"]["train"]["found"] == 3 and report["counts"]["train"]["missing"] == 1
    assert report["counts"]["val"]["found"] == 1 and report["counts"]["val"]["missing"] == 1
    assert {m["entry"] for m in report["missing"]} == {
        "missingvid01_000003_000013",
        "missingvid02_000000_000010",
    }
    # a test row with a label is the test split (the official test CSV has none: see the test below)
    assert _lines(out / "test.txt") == [("clips/eeeeeeeeeee_000000_000010.mp4.stclip", 2)]
    assert report["test_rows_without_labels"] == 0 and report["counts"]["test"]["prepared"] == 1
    info = clipstore.read_info(out / "clips/ccccccccccc_000005_000015.mp4.stclip")
    assert (info.num_frames, info.width, info.height) == (26, 43, 32)
    assert info.fps == pytest.approx(25.0)
    # --strict fails on missing videos
    assert (
        _run(
            "kinetics",
            "--csv",
            str(tmp_path / "train.csv"),
            "--csv",
            str(tmp_path / "val.csv"),
            "--source",
            str(source),
            "--out",
            str(out),
            "--short-side",
            "32",
            "--strict",
        )
        == 1
    )


def test_kinetics_needs_the_train_csv_for_labels(tmp_path: Path) -> None:
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,x,0,10,val\n")
    (tmp_path / "src").mkdir()
    assert (
        _run(
            "kinetics",
            "--csv",
            str(tmp_path / "val.csv"),
            "--source",
            str(tmp_path / "src"),
            "--out",
            str(tmp_path / "out"),
        )
        == 1
    )


def _bad_file_reasons() -> dict[str, str]:
    return {
        "empty": "empty file",
        "truncated": "not a readable video",
        "not_a_video": "not a readable video",
        "no_video_stream": "no video stream",
        "no_frames": "no decodable frames",
        "unreadable": "permission denied",
    }


def test_bad_files_are_skipped_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    bad = make_bad_files(root / "bad", suffix=".mp4")
    write_video(root / "good" / "ok.mp4", 25)
    unreadable = write_video(root / "bad" / "unreadable.mp4", 20)
    bad["unreadable"] = unreadable
    if os.geteuid() == 0:  # root reads anything: make this one file unreadable to the checker
        import stnet.video

        real_open = open

        def guarded_open(path, *args, **kwargs):
            if Path(path) == unreadable:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(stnet.video, "open", guarded_open, raising=False)
    else:
        unreadable.chmod(0)
    out = tmp_path / "out"
    code = _run("list", "--root", str(root), "--folders", "--out", str(out), "--workers", "1")
    assert code == 0  # bad inputs never stop the run
    report = _report(out)
    reasons = {Path(f["source"]).name: f["reason"] for f in report["failures"]}
    for kind, expected in _bad_file_reasons().items():
        assert expected in reasons[bad[kind].name], (kind, reasons[bad[kind].name])
    assert report["counts"]["train"]["prepared"] == 1
    assert _lines(out / "train.txt") == [("clips/good/ok.mp4.stclip", 1)]
    assert (out / "classes.txt").read_text() == "bad 0\ngood 1\n"
    assert not list(out.rglob("*.tmp"))
    assert _run("list", "--root", str(root), "--folders", "--out", str(out), "--strict") == 1


def test_a_split_with_no_usable_video_fails(tmp_path: Path) -> None:
    make_bad_files(tmp_path / "videos" / "bad")
    assert (
        _run(
            "list",
            "--root",
            str(tmp_path / "videos"),
            "--folders",
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
        )
        == 1
    )
    assert _report(tmp_path / "out")["counts"]["train"]["prepared"] == 0


def test_lying_avi_header_does_not_matter(tmp_path: Path) -> None:
    path = write_video(tmp_path / "src" / "a" / "lying.avi", 27, codec="mpeg4")
    data = bytearray(path.read_bytes())
    at = data.index(b"avih") + 8 + 16  # dwTotalFrames, the 5th field of the main AVI header
    data[at : at + 4] = (500).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert (
        _run("list", "--root", str(tmp_path / "src"), "--folders", "--out", str(out), "--workers", "1") == 0
    )
    assert clipstore.read_info(out / "clips/a/lying.avi.stclip").num_frames == 27


def test_list_files_with_splits_and_names(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_video(root / "x" / "one.mp4", 20)
    write_video(root / "y" / "two.avi", 21, codec="mpeg4")
    write_video(root / "y" / "three.mp4", 22)
    (tmp_path / "mine_train.txt").write_text("x/one.mp4 0\ny/two.avi 1\n")
    (tmp_path / "held_out.txt").write_text("# comment\ny/three.mp4 1\ny/gone.mp4 1\n")
    out = tmp_path / "out"
    code = _run(
        "list",
        "--list",
        str(tmp_path / "mine_train.txt"),
        "--list",
        f"val={tmp_path / 'held_out.txt'}",
        "--root",
        str(root),
        "--out",
        str(out),
        "--workers",
        "1",
        "--short-side",
        "48",
    )
    assert code == 0
    assert (out / "classes.txt").read_text() == "x 0\ny 1\n"
    assert _lines(out / "train.txt") == [("clips/x/one.mp4.stclip", 0), ("clips/y/two.avi.stclip", 1)]
    assert _lines(out / "val.txt") == [("clips/y/three.mp4.stclip", 1)]
    assert _report(out)["counts"]["val"]["missing"] == 1
    assert clipstore.read_info(out / "clips/y/two.avi.stclip").num_frames == 21


def test_register_cli_adds_prepare_with_three_front_ends() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="stnet")
    prepare.register_cli(parser.add_subparsers(dest="command"))
    args, rest = parser.parse_known_args(
        ["prepare", "kinetics", "--csv", "a.csv", "--source", "s", "--out", "o"]
    )
    assert args.func is prepare.cmd_prepare and args.dataset == "kinetics"
    assert args.short_side == 256 and rest == []
    args, _ = parser.parse_known_args(["prepare", "ucf101", "--source", "s", "--out", "o"])
    assert args.dataset == "ucf101" and args.short_side == 128 and args.split == 1
    args, _ = parser.parse_known_args(["prepare", "list", "--list", "l.txt", "--root", "r", "--out", "o"])
    assert args.func is prepare.cmd_prepare and args.frames_fps == 30.0
    with pytest.raises(prepare.DataError, match="unexpected arguments"):
        args.func(args, ["--bogus"])


def test_rerun_after_a_real_kill_mid_write(tmp_path: Path) -> None:
    """SIGKILL a prepare run while it writes a clip: the rerun must not trust (or keep) the half file."""
    write_video(tmp_path / "src" / "a" / "v.avi", 40, codec="mpeg4")
    out, marker = tmp_path / "out", tmp_path / "writing"
    argv = [
        "list",
        "--root",
        str(tmp_path / "src"),
        "--folders",
        "--out",
        str(out),
        "--workers",
        "1",
        "--quiet",
    ]
    script = f"""
import sys, time
from pathlib import Path
from stnet import cli, clipstore
add_image = clipstore.ClipWriter.add_image
def add_image_then_hang(self, image, quality=90):
    add_image(self, image, quality)
    if self.num_frames == 10:
        Path({str(marker)!r}).write_text("10 frames written")
        time.sleep(120)
clipstore.ClipWriter.add_image = add_image_then_hang
sys.exit(cli.main(["prepare", *{argv!r}]))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never started writing"
    finally:
        proc.kill()
        proc.wait()
    final = out / "clips/a/v.avi.stclip"
    (leftover,) = list(out.rglob(".*.tmp"))
    assert not final.exists() and not clipstore.is_complete(leftover)
    assert not _report(out)["complete"]
    assert _run(*argv[:-1]) == 0
    assert not leftover.exists() and clipstore.is_complete(final)
    assert clipstore.read_info(final).num_frames == 40 and _report(out)["leftovers_removed"] == 1


def test_corrupt_and_truncated_avi(tmp_path: Path) -> None:
    src = tmp_path / "src" / "a"
    data = write_video(src / "corrupt.avi", 40, codec="mpeg4").read_bytes()
    movi = data.index(b"movi")
    chunk = [i for i in range(movi, len(data)) if data.startswith(b"00dc", i)][20]  # frame 20's data
    size = int.from_bytes(data[chunk + 4 : chunk + 8], "little")
    garbage = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    (src / "corrupt.avi").write_bytes(data[: chunk + 8] + garbage + data[chunk + 8 + size :])
    (src / "truncated.avi").write_bytes(data[: int(len(data) * 0.85)])  # decodes cleanly up to the cut
    out = tmp_path / "out"
    argv = ["list", "--root", str(tmp_path / "src"), "--folders", "--workers", "1"]
    assert _run(*argv, "--out", str(out)) == 0
    report = _report(out)
    (failure,) = report["failures"]
    assert failure["source"].endswith("corrupt.avi")
    assert failure["reason"].startswith("truncated or corrupt: decoding failed after 20 frames")
    (warning,) = report["warnings"]
    assert warning["source"].endswith("truncated.avi") and "the header announces 40" in warning["warning"]
    assert _run(*argv, "--out", str(tmp_path / "partial"), "--keep-partial") == 0
    report = _report(tmp_path / "partial")
    assert not report["failures"] and report["counts"]["train"]["prepared"] == 2
    info = clipstore.read_info(tmp_path / "partial" / "clips/a/corrupt.avi.stclip")
    assert info.num_frames == 20


def test_kinetics_test_csv_without_labels_is_ignored(tmp_path: Path) -> None:
    write_video(tmp_path / "src" / "aaaaaaaaaaa_000000_000010.mp4", 20)
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nyoga,aaaaaaaaaaa,0,10,train\n"
    )
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nbbbbbbbbbbb,0,10,test\n")
    out = tmp_path / "out"
    assert (
        _run(
            "kinetics",
            "--csv",
            str(tmp_path / "train.csv"),
            "--csv",
            str(tmp_path / "test.csv"),
            "--source",
            str(tmp_path / "src"),
            "--out",
            str(out),
            "--workers",
            "1",
        )
        == 0
    )
    report = _report(out)
    assert report["test_rows_without_labels"] == 1 and report["counts"]["train"]["prepared"] == 1
