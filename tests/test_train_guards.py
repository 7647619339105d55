"""What `stnet train` checks and cleans before it trains, and how it fails: the output-folder lock, labels
beyond the model's classes, stale temporary checkpoints, a full disk while checkpointing, the lr scaled
to the global batch, and raw videos' frame counts taken once per run."""

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_argv
from stnet import checkpoint as ckpt_module
from stnet import datasets as datasets_module
from stnet.checkpoint import load_checkpoint
from stnet.cli import main
from stnet.config import ConfigError, load_config
from stnet.fileio import folder_lock
from stnet.optim import base_lr, lr_line
from videos import write_colour_dataset

CLASSES = ["red", "green", "blue"]
TINY = tiny_argv(lr=0.01, num_epochs=1, run_eval=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 classes × 2 train and 1 val 16-frame mp4 videos, with lists and classes.txt."""
    return write_colour_dataset(tmp_path_factory.mktemp("colours"), CLASSES, {"train": 2, "val": 1})


def train(dataset, out, *extra):
    return main(["train", "--dataset_path", str(dataset), "--output_dir", str(out), *TINY, *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("stnet: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_run_into_the_same_output_dir_is_refused_with_the_holders_pid(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    with folder_lock(out, "training run"):  # another run holds the folder
        assert train(dataset, out) == 1
        line = one_line_error(capsys)
    assert f"is in use by another stnet training run (PID {os.getpid()})" in line
    assert not (out / "checkpoints").exists()
    assert train(dataset, out) == 0, "the lock goes with its holder"


def test_a_label_beyond_the_classes_is_refused_before_training(dataset, tmp_path, capsys):
    """classes.txt names 3 classes, so the list's label 7 is not caught by the class count."""
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "videos").symlink_to(dataset / "videos")
    for name in ("classes.txt", "val.txt"):
        shutil.copy(dataset / name, bad / name)
    lines = (dataset / "train.txt").read_text().splitlines()
    lines[-1] = lines[-1].rsplit(" ", 1)[0] + " 7"
    (bad / "train.txt").write_text("\n".join(lines) + "\n")
    assert train(bad, tmp_path / "run") == 1
    line = one_line_error(capsys)
    assert "the train split has label 7, but the model has 3 classes (labels 0..2)" in line
    assert "fix the labels in its list" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_stale_temporary_files_of_the_run_are_removed_and_nothing_else(dataset, tmp_path):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    stale = [
        ckpts / ".last.pt.k2j_9x0a.tmp",
        ckpts / ".stnet-0004.pt.abcdefgh.tmp",
        out / ".metrics.jsonl.zz99yy88.tmp",
    ]
    kept = [
        ckpts / ".last.pt.tmp",  # not the temp-name pattern
        ckpts / ".notes.txt.abcdefgh.tmp",  # not a file a training run writes
        ckpts / "mine.tmp",
        out / ".data.csv.abcdefgh.tmp",
    ]
    for path in stale + kept:
        path.write_bytes(b"PK\x03\x04 half a file")
    assert train(dataset, out) == 0
    assert not [p for p in stale if p.exists()]
    assert all(p.read_bytes() == b"PK\x03\x04 half a file" for p in kept)


class _FullDisk:
    """A file object on a disk that fills up after ``room`` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
    dataset, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert train(dataset, out) == 0
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):  # what torch raises when writing to a path fails
            Path(f).write_bytes(b"PK\x03\x04 half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, _FullDisk(f, 4096), *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save_on_a_full_disk)
    assert train(dataset, out, "--num_epochs", "2", "--resume", "auto") == 1
    line = one_line_error(capsys)
    assert line == f"stnet: error: no space left on device writing {last}"
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "stnet-0001.pt"], "no temp file"


def test_the_lr_scales_with_the_global_batch_of_the_recipe():
    kinetics = load_config("kinetics400")
    assert kinetics.base_batch == 128 and load_config("ucf101").base_batch == 128
    assert base_lr(kinetics) == 0.01 * 16 / 128
    assert lr_line(kinetics) == "lr 0.01 × (16 / 128) = 0.00125 for global batch 16"
    assert base_lr(kinetics, world_size=8) == 0.01  # the reference's 8 processes
    accumulated = load_config("kinetics400", ["--batch_size", "8", "--accumulate_steps", "2"])
    assert lr_line(accumulated, world_size=2) == "lr 0.01 × (32 / 128) = 0.0025 for global batch 32"
    literal = load_config("kinetics400", ["--scale_lr", "false"])
    assert base_lr(literal) == 0.01 and lr_line(literal).startswith("lr 0.01 as given (scale_lr false)")
    assert base_lr(load_config(None, ["--lr", "0.3"]), world_size=4) == 0.3, "no base_batch: as given"
    with pytest.raises(ConfigError, match="base_batch: -1 is out of range"):
        load_config(None, ["--base_batch", "-1"])
    with pytest.raises(ConfigError, match="scale_lr: 'sometimes' is not valid; use true or false"):
        load_config(None, ["--scale_lr", "sometimes"])


def test_training_uses_the_scaled_lr_and_says_so(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(dataset, out, "--base_batch", "12") == 0
    assert "lr 0.01 × (3 / 12) = 0.0025 for global batch 3" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["history"][0]["lr"] == 0.0025


def test_each_video_is_scanned_once_per_run_not_once_per_epoch(dataset, tmp_path, monkeypatch):
    """Every epoch's loader starts fresh worker processes; they must not count the videos' frames again."""
    calls = tmp_path / "calls.txt"
    real = datasets_module.count_packets

    def counting(path):
        with open(calls, "a") as f:  # the workers are other processes
            f.write(f"{path}\n")
        return real(path)

    monkeypatch.setattr(datasets_module, "count_packets", counting)
    extra = ["--workers", "1", "--num_epochs", "2", "--run_eval", "true", "--eval_start_epoch", "1"]
    assert train(dataset, tmp_path / "run", *extra) == 0
    scanned = sorted(calls.read_text().splitlines())
    listed = sorted(
        str(dataset / line.split()[0])
        for split in ("train", "val")
        for line in (dataset / f"{split}.txt").read_text().splitlines()
    )
    assert scanned == listed
