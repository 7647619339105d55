"""`stnet prepare` against bad inputs and faults (issue 13 items 2-6, 8, 9, 11, 13, 16; issue 14 item 8).

Every input is built here from scratch (real encoded videos from ``videos.py``). Each case checks the exit
code, the one ``stnet: error:`` line (no traceback), that every input file is byte-for-byte unchanged,
and that no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stnet import cli, clipstore, datasets, lists, runners
from videos import write_video

SRC = str(Path(cli.__file__).parents[1])


def _prepare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``stnet prepare ARGV`` in this process: exit code and stderr."""
    code = cli.main(["prepare", *argv, "--quiet", "--workers", "1", "--short-side", "32"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _error(err: str) -> str:
    """The single error line of a failed run."""
    errors = [line for line in err.splitlines() if line.startswith("stnet: error:")]
    assert len(errors) == 1, err
    return errors[0]


def _checksums(*roots: Path) -> dict[str, str]:
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _no_temp_files(*roots: Path) -> None:
    assert not [p for root in roots for p in root.rglob("*.tmp")]


def _lines(path: Path) -> list[tuple[str, int]]:
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in path.read_text().splitlines()]


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """videos/{a,b}/*.mp4 with train.txt/val.txt lists beside them."""
    root = tmp_path / "videos"
    write_video(root / "a" / "one.mp4", 6)
    write_video(root / "b" / "two.mp4", 7)
    write_video(root / "b" / "three.mp4", 8)
    (root / "train.txt").write_text("a/one.mp4 0\nb/two.mp4 1\n")
    (root / "val.txt").write_text("b/three.mp4 1\n")
    return root


# --- item 2: nothing the user owns is overwritten ----------------------------------------------------


def test_out_holding_an_input_is_refused(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _checksums(tmp_path)
    lists_ = ["--list", f"train={videos / 'train.txt'}", "--list", f"val={videos / 'val.txt'}"]
    for out in (videos, videos / "b", videos / "train.txt", tmp_path):
        code, err = _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))
        assert code == 1 and "input" in _error(err), err
    # a label file elsewhere is an input too
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "classes.txt").write_text("a 0\nb 1\n")
    before = _checksums(tmp_path)
    code, err = _prepare(
        capsys, "list", "--root", str(videos), *lists_, "--label-file", str(tmp_path / "labels/classes.txt"),
        "--out", str(tmp_path / "labels"),
    )  # fmt: skip
    assert code == 1 and "holds the input" in _error(err)
    assert _checksums(tmp_path) == before  # nothing changed, nothing created (not even a lock file)
    _no_temp_files(tmp_path)


def test_kinetics_and_ucf_out_holding_inputs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_video(tmp_path / "k" / "aaaaaaaaaaa_000000_000010.mp4", 6)
    (tmp_path / "k" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nyoga,aaaaaaaaaaa,0,10,train\n"
    )
    before = _checksums(tmp_path)
    code, err = _prepare(
        capsys, "kinetics", "--csv", str(tmp_path / "k/train.csv"), "--source", str(tmp_path / "k"),
        "--out", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 1 and "input" in _error(err)
    ann = tmp_path / "ucf" / "ucfTrainTestlist"
    write_video(tmp_path / "ucf" / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi", 6, codec="mpeg4")
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 Archery\n")
    (ann / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    (ann / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    before = _checksums(tmp_path)
    code, err = _prepare(
        capsys,
        "ucf101",
        "--source",
        str(tmp_path / "ucf/UCF-101"),
        "--annotations",
        str(ann),
        "--out",
        str(ann),
    )
    assert code == 1 and "holds the input" in _error(err)
    assert _checksums(tmp_path) == before


def test_a_file_prepare_did_not_write_is_never_replaced(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lists_ = ["--list", f"train={videos / 'train.txt'}", "--list", f"val={videos / 'val.txt'}"]
    for name in ("train.txt", "classes.txt", "prepare_report.json", "clips/a/one.mp4.stclip"):
        out = tmp_path / f"out-{name.replace('/', '_')}"
        (out / name).parent.mkdir(parents=True)
        (out / name).write_text("the user's own file\n")
        before = _checksums(tmp_path)
        code, err = _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))
        assert code == 1 and "nothing was written" in _error(err), err
        assert _checksums(tmp_path) == before and not (out / ".stnet.lock").exists()
    # prepare's own files (listed in its report) are rewritten by a rerun; another user file beside them
    # is left alone
    out = tmp_path / "out"
    assert _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))[0] == 0
    files = set(_report(out)["files"])
    assert {"train.txt", "val.txt", "classes.txt", "prepare_report.json", "clips/a/one.mp4.stclip"} <= files
    (out / "notes.md").write_text("mine\n")
    assert _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))[0] == 0
    assert (out / "notes.md").read_text() == "mine\n"
    _no_temp_files(tmp_path)


def test_an_older_store_says_what_to_do(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lists_ = ["--list", f"train={videos / 'train.txt'}", "--list", f"val={videos / 'val.txt'}"]
    out = tmp_path / "out"
    assert _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))[0] == 0
    report = _report(out)
    del report["files"]  # what an older stnet wrote: no list of its files, clip names without extension
    (out / "prepare_report.json").write_text(json.dumps(report))
    before = _checksums(out)
    code, err = _prepare(capsys, "list", "--root", str(videos), *lists_, "--out", str(out))
    assert code == 1 and "older stnet" in _error(err) and "new --out folder" in _error(err)
    assert _checksums(out) == before


# --- item 3: labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["O", "-1", "1.5"])
def test_a_non_integer_label_in_an_integer_list_is_an_error(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, bad: str
) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(f"a/one.mp4 0\nb/two.mp4 {bad}\n")
    before = _checksums(tmp_path)
    code, err = _prepare(
        capsys, "list", "--root", str(videos), "--list", str(listing), "--out", str(tmp_path / "o")
    )
    assert code == 1 and f"{listing}:2: label {bad!r}" in _error(err)
    assert _checksums(tmp_path) == before and not (tmp_path / "o").exists()


def test_label_kinds_do_not_mix(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = tmp_path / "names.txt"
    names.write_text("# a comment\na/one.mp4 a\nb/two.mp4 3\n")
    code, err = _prepare(
        capsys, "list", "--root", str(videos), "--list", str(names), "--out", str(tmp_path / "o")
    )
    assert code == 1 and f"{names}:3: label '3' is a number" in _error(err)
    (tmp_path / "train.txt").write_text("a/one.mp4 a\n")
    (tmp_path / "val.txt").write_text("b/three.mp4 1\n")
    code, err = _prepare(
        capsys, "list", "--root", str(videos), "--list", str(tmp_path / "train.txt"),
        "--list", str(tmp_path / "val.txt"), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 1 and "use one kind in every list" in _error(err)
    assert not (tmp_path / "o").exists()


def test_integer_labels_are_kept_as_given(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "v"
    for label in (2, 10, 11):
        write_video(root / f"v{label}.mp4", 5)
    (tmp_path / "train.txt").write_text("v2.mp4 2\nv10.mp4 10\nv11.mp4 11\n")
    out = tmp_path / "out"
    code, _ = _prepare(
        capsys, "list", "--root", str(root), "--list", str(tmp_path / "train.txt"), "--out", str(out)
    )
    assert code == 0
    assert _lines(out / "train.txt") == [
        ("clips/v2.mp4.stclip", 2),
        ("clips/v10.mp4.stclip", 10),
        ("clips/v11.mp4.stclip", 11),
    ]


def test_a_video_listed_twice(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text("a/one.mp4 0\nb/two.mp4 1\na/./one.mp4 1\n")
    code, err = _prepare(
        capsys, "list", "--root", str(videos), "--list", str(listing), "--out", str(tmp_path / "o")
    )
    assert code == 1 and f"{listing}:3:" in _error(err) and "one video, one label" in _error(err)
    assert not (tmp_path / "o").exists()
    listing.write_text("a/one.mp4 0\nb/two.mp4 1\na//one.mp4 0\n")
    out = tmp_path / "out"
    code, err = _prepare(capsys, "list", "--root", str(videos), "--list", str(listing), "--out", str(out))
    assert code == 0 and f"stnet: warning: {listing}:3:" in err and "listed twice" in err
    assert _lines(out / "train.txt") == [("clips/a/one.mp4.stclip", 0), ("clips/b/two.mp4.stclip", 1)]


# --- items 4 and 5: clip names -----------------------------------------------------------------------


def test_two_sources_never_share_a_clip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "v"
    write_video(root / "a" / "x.mp4", 5)
    write_video(root / "a" / "x.avi", 9, codec="mpeg4")
    (tmp_path / "train.txt").write_text("a/x.mp4 0\na/x.avi 1\n")
    out = tmp_path / "out"
    code, _ = _prepare(
        capsys, "list", "--root", str(root), "--list", str(tmp_path / "train.txt"), "--out", str(out)
    )
    assert code == 0
    samples = datasets.read_list(out / "train.txt", out)
    assert [(s.path.name, s.label) for s in samples] == [("x.mp4.stclip", 0), ("x.avi.stclip", 1)]
    assert [clipstore.read_info(s.path).num_frames for s in samples] == [5, 9]


def test_odd_file_names_give_lists_the_loader_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "v"
    names = [
        "new\nline.mp4",
        "tab\there.mp4",
        " lead.mp4",
        "trail .mp4",
        "100%.mp4",
        "100%25.mp4",
        "sep\u2028x.mp4",
    ]
    for i, name in enumerate(names):
        write_video(root / "cls" / name, 4 + i)
    write_video(root / "cls" / os.fsdecode(b"latin1-\xe9.mp4"), 20)  # bytes that are not UTF-8
    out = tmp_path / "out"
    code, _ = _prepare(capsys, "list", "--root", str(root), "--folders", "--out", str(out))
    assert code == 0
    samples = datasets.read_list(out / "train.txt", out)
    assert len(samples) == len(names) + 1 == len({s.path for s in samples})
    assert sorted(clipstore.read_info(s.path).num_frames for s in samples) == [*range(4, 4 + len(names)), 20]
    assert datasets.read_classes(out / "classes.txt") == ["cls"]
    json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))  # valid UTF-8 JSON


def test_a_class_name_classes_txt_cannot_hold_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "v"
    write_video(root / "fine" / "a.mp4", 4)
    write_video(root / "trailing " / "b.mp4", 4)
    code, err = _prepare(capsys, "list", "--root", str(root), "--folders", "--out", str(tmp_path / "out"))
    assert code == 1 and "'trailing '" in _error(err) and "classes.txt" in _error(err)
    assert not (tmp_path / "out").exists()


# --- item 11: text encodings -------------------------------------------------------------------------


def test_byte_order_marks_are_ignored(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "train.txt").write_bytes(bom + b"a/one.mp4 a\nb/two.mp4 b\n")
    (tmp_path / "classes.txt").write_bytes(bom + b"a 0\nb 1\n")
    out = tmp_path / "out"
    code, _ = _prepare(
        capsys, "list", "--root", str(videos), "--list", str(tmp_path / "train.txt"),
        "--label-file", str(tmp_path / "classes.txt"), "--out", str(out),
    )  # fmt: skip
    assert code == 0 and len(_lines(out / "train.txt")) == 2 and _report(out)["missing"] == []
    assert (out / "classes.txt").read_bytes() == b"a 0\nb 1\n"
    # a Kinetics CSV exported by Excel
    write_video(tmp_path / "k" / "aaaaaaaaaaa_000000_000010.mp4", 6)
    csv = tmp_path / "train.csv"
    csv.write_bytes(bom + b"label,youtube_id,time_start,time_end,split\nyoga,aaaaaaaaaaa,0,10,train\n")
    out = tmp_path / "kout"
    code, _ = _prepare(
        capsys, "kinetics", "--csv", str(csv), "--source", str(tmp_path / "k"), "--out", str(out)
    )
    assert code == 0 and (out / "classes.txt").read_text() == "yoga 0\n"
    # the shared class-file parser: the same BOM-safe reading in datasets and export
    assert datasets.read_classes is lists.read_classes
    assert lists.read_classes(tmp_path / "classes.txt") == ["a", "b"]
    cfg = type("Cfg", (), {"class_num": 2, "dataset_path": None})()
    assert runners.class_names_for(cfg, None, tmp_path / "classes.txt") == ["a", "b"]  # type: ignore[arg-type]
    (tmp_path / "plain.txt").write_bytes(bom + b"jump\nrun\n")
    assert runners.class_names_for(cfg, None, tmp_path / "plain.txt") == ["jump", "run"]  # type: ignore[arg-type]


def test_a_file_that_is_not_utf8_is_one_line(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    listing = tmp_path / "train.txt"
    listing.write_bytes(b"a/one.mp4 0\nb/tw\xf6.mp4 1\n")
    for argv in (
        ["list", "--root", str(videos), "--list", str(listing)],
        ["list", "--root", str(videos), "--folders", "--label-file", str(listing)],
        ["kinetics", "--csv", str(listing), "--source", str(videos)],
    ):
        code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "o"))
        assert code == 1 and _error(err).endswith(
            f"{listing}: not UTF-8 text (byte 0xf6 at offset 16); save it as UTF-8"
        )
    assert not (tmp_path / "o").exists()


# --- item 13 (prepare part) and issue 14 item 8 ------------------------------------------------------


def test_an_empty_train_list_warns_and_fails_with_strict(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "train.txt").write_text("# nothing yet\n")
    argv = ["list", "--root", str(videos), "--list", f"train={tmp_path / 'train.txt'}",
            "--list", f"val={videos / 'val.txt'}"]  # fmt: skip
    code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 0 and f"stnet: warning: {tmp_path / 'train.txt'} lists no video" in err
    assert "stnet: warning: the train split lists no video" in err
    code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "strict"), "--strict")
    assert code == 1 and "--strict: the train split lists no video" in _error(err)


def test_kinetics_test_rows_with_labels_become_the_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_video(tmp_path / "k" / "aaaaaaaaaaa_000000_000010.mp4", 6)
    write_video(tmp_path / "k" / "bbbbbbbbbbb_000000_000010.mp4", 7)
    header = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(header + "yoga,aaaaaaaaaaa,0,10,train\n")
    (tmp_path / "test.csv").write_text(header + "yoga,bbbbbbbbbbb,0,10,test\n")
    out = tmp_path / "out"
    argv = ["kinetics", "--csv", str(tmp_path / "train.csv"), "--csv", str(tmp_path / "test.csv"),
            "--source", str(tmp_path / "k"), "--out", str(out)]  # fmt: skip
    code, err = _prepare(capsys, *argv)
    assert code == 0 and "test: 1 of 1 listed" in err
    assert _lines(out / "test.txt") == [("clips/bbbbbbbbbbb_000000_000010.mp4.stclip", 0)]
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nbbbbbbbbbbb,0,10,test\n")
    code, err = _prepare(capsys, *argv)
    assert code == 0 and "stnet: warning: 1 test rows have no label" in err
    assert (out / "test.txt").read_text() == ""  # the earlier run's test list is not left stale


# --- item 16: a source replaced under the same name --------------------------------------------------


def test_a_replaced_source_is_converted_again(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [
        "list",
        "--root",
        str(videos),
        "--list",
        f"train={videos / 'train.txt'}",
        "--out",
        str(tmp_path / "o"),
    ]
    assert _prepare(capsys, *argv)[0] == 0
    clip = tmp_path / "o/clips/a/one.mp4.stclip"
    assert clipstore.read_info(clip).num_frames == 6
    source = videos / "a" / "one.mp4"
    stat = source.stat()
    write_video(source, 9)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime (a new size)
    assert _prepare(capsys, *argv)[0] == 0
    assert clipstore.read_info(clip).num_frames == 9 and _report(tmp_path / "o")["sources_changed"] == 1
    os.utime(source)  # touched, same bytes: reused (the hash of both ends agrees)
    assert _prepare(capsys, *argv)[0] == 0
    report = _report(tmp_path / "o")
    assert report["sources_changed"] == 0 and report["counts"]["train"]["reused"] == 2


# --- item 8: operating-system errors -----------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[bool]:
    """Mount a tmpfs at ``folder`` if this process may (root on Linux); yields whether it did."""
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        yield False
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_out_is_a_file_or_read_only(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["list", "--root", str(videos), "--list", f"train={videos / 'train.txt'}"]
    (tmp_path / "afile").write_text("x")
    code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "afile"))
    assert code == 1 and "is a file, not a folder" in _error(err)
    code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "afile" / "sub"))
    assert code == 1 and _error(err).startswith("stnet: error: a part of the path is a file")
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as mounted:
        if not mounted:
            (tmp_path / "ro").chmod(0o555)
        code, err = _prepare(capsys, *argv, "--out", str(tmp_path / "ro" / "out"))
        if not mounted:
            (tmp_path / "ro").chmod(0o755)
    assert (
        code == 1
        and _error(err).endswith(f"{tmp_path / 'ro' / 'out'}/.stnet.lock")
        and ("read-only file system" in err or "permission denied" in err)
    )


def test_a_full_disk_leaves_a_consistent_store(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "v"
    for i in range(3):
        write_video(root / "a" / f"v{i}.mp4", 40)
    (tmp_path / "train.txt").write_text("".join(f"a/v{i}.mp4 0\n" for i in range(3)))
    before = _checksums(tmp_path)
    disk = tmp_path / "disk"
    argv = ["list", "--root", str(root), "--list", str(tmp_path / "train.txt"), "--out", str(disk / "out")]
    with _tmpfs(disk, "size=48k") as mounted:
        if not mounted:  # no tmpfs without root: the clip writes fail as on a full disk
            written = [0]
            add_jpeg = clipstore.ClipWriter.add_jpeg

            def filling_up(self: clipstore.ClipWriter, data: bytes, size: tuple[int, int]) -> None:
                written[0] += len(data)
                if written[0] > 48 * 1024:
                    raise OSError(errno.ENOSPC, "No space left on device")
                add_jpeg(self, data, size)

            monkeypatch.setattr(clipstore.ClipWriter, "add_jpeg", filling_up)
        code, err = _prepare(capsys, *argv)
        line = _error(err)
        assert code == 1 and line.startswith("stnet: error: no space left on device writing ")
        assert f"{disk / 'out'}/clips/a/v" in line and "rerun the same command" in line
        report = _report(disk / "out")
        assert not report["complete"] and "no space left" in report["stopped"]
        _no_temp_files(disk)
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        else:
            monkeypatch.undo()
        code, err = _prepare(capsys, *argv)
        assert code == 0, err
        report = _report(disk / "out")
        assert report["complete"] and report["counts"]["train"]["prepared"] == 3
        assert [
            clipstore.read_info(s.path).num_frames for s in datasets.read_list(disk / "out/train.txt")
        ] == [40] * 3
        _no_temp_files(disk)
    assert _checksums(tmp_path / "v", tmp_path / "train.txt") == before


# --- items 6 and 9: a second run, kill -9 and SIGTERM ------------------------------------------------


def _hanging_prepare(out: Path, root: Path, marker: Path, workers: int) -> subprocess.Popen:
    """``stnet prepare`` in a child process whose decoding (in its workers) hangs after 3 frames."""
    argv = ["list", "--root", str(root), "--folders", "--out", str(out), "--workers", str(workers)]
    argv += ["--quiet", "--short-side", "32"]
    script = f"""
import os, sys, time
from pathlib import Path
from stnet import cli, clipstore
add_image = clipstore.ClipWriter.add_image
def add_image_then_hang(self, image, quality=90):
    add_image(self, image, quality)
    if self.num_frames == 3:
        Path({str(marker)!r} + "." + str(os.getpid())).write_text("writing")
        time.sleep(120)
clipstore.ClipWriter.add_image = add_image_then_hang
sys.exit(cli.main(["prepare", *{argv!r}]))
"""
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)


def _wait_for(markers: Path, count: int, proc: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(markers.parent.glob(markers.name + ".*"))
        if len(found) >= count:
            return [int(p.suffix[1:]) for p in found]
        time.sleep(0.05)
    raise AssertionError(f"the child never started writing: {proc.poll()}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone(pids: list[int], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


def _two_videos(root: Path) -> None:
    write_video(root / "a" / "one.mp4", 12)
    write_video(root / "a" / "two.mp4", 12)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_second_prepare_into_a_busy_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _two_videos(tmp_path / "v")
    out, marker = tmp_path / "out", tmp_path / "writing"
    proc = _hanging_prepare(out, tmp_path / "v", marker, workers=1)
    try:
        _wait_for(marker, 1, proc)
        code, err = _prepare(capsys, "list", "--root", str(tmp_path / "v"), "--folders", "--out", str(out))
        assert code == 1 and f"(PID {proc.pid})" in _error(err) and "in use by another stnet prepare" in err
    finally:
        proc.kill()
        proc.wait()
    code, err = _prepare(capsys, "list", "--root", str(tmp_path / "v"), "--folders", "--out", str(out))
    assert code == 0, err
    assert _report(out)["leftovers_removed"] == 1  # the killed run's temp file
    _no_temp_files(out)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_die_with_a_killed_prepare(tmp_path: Path) -> None:
    _two_videos(tmp_path / "v")
    marker = tmp_path / "writing"
    proc = _hanging_prepare(tmp_path / "out", tmp_path / "v", marker, workers=2)
    try:
        workers = _wait_for(marker, 2, proc)
        assert proc.pid not in workers and all(_alive(p) for p in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _gone(workers), [p for p in workers if _alive(p)]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    _two_videos(tmp_path / "v")
    out, marker = tmp_path / "out", tmp_path / "writing"
    proc = _hanging_prepare(out, tmp_path / "v", marker, workers=2)
    try:
        workers = _wait_for(marker, 2, proc)
        assert list(out.rglob("*.tmp"))  # the workers' clips in the making
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and err.strip() == "stnet: interrupted", err
    assert _gone(workers)
    report = _report(out)
    assert not report["complete"] and report["stopped"] == "interrupted (SIGTERM)"
    _no_temp_files(out)
