"""`stnet prepare ... --shard i/N` and `stnet prepare merge`: N shards plus a merge write the same lists,
byte for byte, as one unsharded run; merge refuses while a shard is missing, incomplete or running."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stnet import cli, prepare
from stnet.fileio import folder_lock
from videos import write_video

LISTS = ("train.txt", "val.txt", "classes.txt")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 tiny videos of 3 classes, train/val lists (one listed video not on disk), and one video in
    both splits."""
    root = tmp_path_factory.mktemp("shards")
    lines = []
    for c, name in enumerate(["run", "jump", "swim"]):
        for i in range(4):
            write_video(root / "videos" / name / f"{name}_{i}.mp4", 3 + i, height=16, width=16)
            lines.append(f"{name}/{name}_{i}.mp4 {c}")
    (root / "train.txt").write_text("\n".join(lines[::2]) + "\nrun/gone.mp4 0\n")
    (root / "val.txt").write_text("\n".join(lines[1::2] + lines[:1]) + "\n")
    return root


def _argv(source: Path, out: Path, *more: str) -> list[str]:
    lists = ["--list", str(source / "train.txt"), "--list", str(source / "val.txt")]
    return ["prepare", "list", "--root", str(source / "videos"), *lists, "--out", str(out), "--quiet", *more]


def _error(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("stnet: error: ")
    return lines[-1]


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_shards_and_merge_equal_one_run(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    assert cli.main(_argv(source, one, "--workers", "1")) == 0

    assert cli.main(["prepare", "merge", str(many)]) == 1
    assert "holds no shards" in _error(capsys)
    assert cli.main(_argv(source, many, "--shard", "1/2", "--workers", "1")) == 0
    assert cli.main(["prepare", "merge", str(many)]) == 1
    assert "shard 0/2 has not run" in _error(capsys)
    assert not (many / "train.txt").exists()

    # shard 0 killed half way: its report says incomplete, and a temporary clip of it is left behind
    shard0 = many / "shards/0-of-2"
    assert cli.main(_argv(source, many, "--shard", "0/2", "--workers", "2")) == 0
    report0 = _report(shard0 / "prepare_report.json")
    (shard0 / "prepare_report.json").write_text(
        json.dumps({**report0, "complete": False, "stopped": "SIGTERM"})
    )
    assert cli.main(["prepare", "merge", str(many)]) == 1
    assert "shard 0/2 is incomplete (SIGTERM): rerun it" in _error(capsys)
    own0 = [f for f in report0["files"] if f.startswith("clips/")]
    leftover = many / Path(own0[0]).parent / f".{Path(own0[0]).name}.abc123.tmp"
    leftover.write_bytes(b"half a clip")
    theirs = [
        f for f in _report(many / "shards/1-of-2/prepare_report.json")["files"] if f.startswith("clips/")
    ]
    other = many / Path(theirs[0]).parent / f".{Path(theirs[0]).name}.xyz789.tmp"
    other.write_bytes(b"shard 1 is writing this")
    assert cli.main(_argv(source, many, "--shard", "0/2", "--workers", "1")) == 0  # the rerun finishes it
    assert not leftover.exists() and other.exists()  # another shard's temporary file is left alone
    other.unlink()
    assert _report(shard0 / "prepare_report.json")["counts"]["train"]["reused"] >= 1

    with folder_lock(many / "shards/1-of-2", "prepare"):  # shard 1 running again
        assert cli.main(["prepare", "merge", str(many)]) == 1
        assert f"is in use by another stnet prepare (PID {os.getpid()})" in _error(capsys)
    assert cli.main(["prepare", "merge", str(many)]) == 0

    for name in LISTS:
        assert (many / name).read_bytes() == (one / name).read_bytes(), name
    shards = [_report(many / f"shards/{i}-of-2/prepare_report.json") for i in range(2)]
    clips = [{f for f in r["files"] if f.startswith("clips/")} for r in shards]
    assert clips[0] and clips[1] and not clips[0] & clips[1]  # a partition, both parts used
    merged, whole = _report(many / "prepare_report.json"), _report(one / "prepare_report.json")
    assert merged["complete"] and merged["shards"] == 2
    assert merged["counts"] == {
        split: {**c, "reused": merged["counts"][split]["reused"]} for split, c in whole["counts"].items()
    }
    assert merged["missing"] == whole["missing"] == [{"split": "train", "entry": "run/gone.mp4"}]
    assert (merged["bytes"]["source"], merged["bytes"]["store"]) == (
        whole["bytes"]["source"],
        whole["bytes"]["store"],
    )
    assert {**merged["options"], "shard": None} == {**whole["options"], "out": str(many)}

    # the merged folder is one store: an unsharded rerun into it reuses every clip, replaces nothing
    assert cli.main(_argv(source, many, "--workers", "1")) == 0
    again = _report(many / "prepare_report.json")
    assert again["counts"]["train"]["reused"] == again["counts"]["train"]["prepared"] == 6
    for name in LISTS:
        assert (many / name).read_bytes() == (one / name).read_bytes(), name


def test_shards_must_agree(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert cli.main(_argv(source, out, "--shard", "0/2", "--workers", "1")) == 0
    assert cli.main(_argv(source, out, "--shard", "1/2", "--workers", "1", "--quality", "80")) == 0
    assert cli.main(["prepare", "merge", str(out)]) == 1
    assert "shard 1 and shard 0 differ in settings" in _error(capsys)
    # another partition into the same folder: the clips of the earlier shards are prepare's own
    assert cli.main(_argv(source, out, "--shard", "0/3", "--workers", "1")) == 0
    assert cli.main(["prepare", "merge", str(out)]) == 1
    assert "holds shards of 2 and 3 parts" in _error(capsys)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2/2", "i must be 0..1 (a Slurm array counts from 0: --array=0-1)"),
        ("1", "expected i/N"),
        ("0/0", "expected i/N"),
    ],
)
def test_shard_argument(
    value: str, message: str, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(_argv(source, tmp_path / "o", "--shard", value)) == 2
    assert message in capsys.readouterr().err


def test_the_partition_is_stable() -> None:
    keys = [f"clips/k400/video_{i:06d}.mp4.stclip" for i in range(2000)]
    parts = [prepare.shard_of(k, 4) for k in keys]
    assert parts[:8] == [prepare.shard_of(k, 4) for k in keys[:8]]  # a pure function of the path
    assert all(400 < parts.count(i) < 600 for i in range(4))  # and an even split
    # BLAKE2b of the UTF-8 path, not hash(): the same in every process, Python release and machine
    assert [prepare.shard_of(f"clips/{k}.mp4.stclip", 4) for k in "ab"] == [0, 3]
