"""A rehearsal at Kinetics-400 shape: 400 classes named like Kinetics', the official CSVs with their quirks
(quoted names with commas and parentheses, a byte-order mark, a test CSV without labels, videos that
were never downloaded), real encoded videos, then under torchrun with 2 processes: training with gradient
accumulation and an evaluation with 3 clips x 3 crops that counts every video once and equals one
process, with ``--json`` output that parses."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
import torch

from conftest import run_stnet
from stnet.checkpoint import load_checkpoint
from videos import write_video

pytestmark = pytest.mark.slow

NUM_CLASSES = 400
TRAIN_PRESENT = 24  # train rows whose video exists; the other 376 were "never downloaded"
VAL_VIDEOS = 10
_TRICKY = [
    "passing American football (in game)",
    "tying knot (not on a tie)",
    "massaging person's head",
    "riding or walking with horse",
    "petting animal (not cat)",
    "cooking on campfire",
    "dancing charleston",
    "eating ice cream",
    "pushing car",
    "waxing eyebrows",
]


def class_names() -> list[str]:
    extra = [f"action {i:03d}, variant" if i % 7 == 0 else f"action {i:03d}" for i in range(400)]
    return (_TRICKY + extra)[:NUM_CLASSES]


def frames_for(label: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A flat colour per class with noise: learnable enough that the numbers are not all ties."""
    base = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], np.float32)
    return [np.clip(base + rng.normal(0, 8, (32, 40, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    root = tmp_path_factory.mktemp("k400")
    videos = root / "videos"
    names = class_names()
    rng = np.random.default_rng(0)
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]

    def row(label: int, i: int, split: str) -> list[str]:
        return [names[label], f"yt-{split[:2]}_{label:03d}{i}", str(10 * i), str(10 * i + 10), split, "0"]

    train_rows = [row(c, 0, "train") for c in range(NUM_CLASSES)]
    val_rows = [row(c % 6, 1 + c, "val") for c in range(VAL_VIDEOS)] + [row(7, 99, "val")]  # last: missing
    for rows, present in ((train_rows[:TRAIN_PRESENT], True), (val_rows[:VAL_VIDEOS], True)):
        for r in rows:
            label = names.index(r[0])
            name = f"{r[1]}_{int(r[2]):06d}_{int(r[3]):06d}.mp4"
            folder = videos / r[0].replace(" ", "_") if present else videos
            folder.mkdir(parents=True, exist_ok=True)
            write_video(folder / name, 10, frames=frames_for(label, 10, rng), height=32, width=40)
    for rows, name in ((train_rows, "kinetics_train.csv"), (val_rows, "kinetics_val.csv")):
        with open(root / name, "w", newline="", encoding="utf-8-sig") as f:  # Excel's BOM
            w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
            w.writerow(header)
            w.writerows(rows)
    with open(root / "kinetics_test.csv", "w", newline="") as f:  # the official test CSV: no label column
        w = csv.writer(f)
        w.writerow(["youtube_id", "time_start", "time_end", "split"])
        w.writerow(["yt-te_0001", "0", "10", "test"])
    out = root / "prepared"
    done = stnet(
        "prepare",
        "kinetics",
        "--source",
        str(videos),
        "--csv",
        str(root / "kinetics_train.csv"),
        "--csv",
        str(root / "kinetics_val.csv"),
        "--csv",
        str(root / "kinetics_test.csv"),
        "--out",
        str(out),
        "--short-side",
        "32",
        "--workers",
        "2",
        "--quiet",
    )
    return out, done, names


def stnet(*args: str, nproc: int | None = None) -> subprocess.CompletedProcess:
    return run_stnet(*args, nproc=nproc, timeout=900)


MODEL = ["--depth", "18", "--T", "2", "--N", "2", "--target_size", "32", "--short_size", "32"]
TRAIN = [
    *MODEL,
    "--dataset_type",
    "kinetics400",
    "--class_num",
    str(NUM_CLASSES),
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--lr",
    "0.01",
    "--deterministic",
    "true",
    "--num_epochs",
    "1",
    "--run_eval",
    "false",
    "--freeze_bn",
    "true",  # batch statistics couple a batch's clips: 1 x 8 equals 2 x 2 x 2 only with running stats
]


@pytest.fixture(scope="module")
def trained(kinetics, tmp_path_factory):
    data, _, _ = kinetics
    base = tmp_path_factory.mktemp("k400runs")
    single = stnet(
        "train", "--dataset_path", str(data), "--output_dir", str(base / "one"), "--batch_size", "8", *TRAIN
    )
    ddp = stnet(
        "train",
        "--dataset_path",
        str(data),
        "--output_dir",
        str(base / "two"),
        "--batch_size",
        "2",
        "--accumulate_steps",
        "2",
        *TRAIN,
        nproc=2,
    )
    return base, single, ddp


def test_prepare_reads_the_official_csvs(kinetics):
    data, done, names = kinetics
    assert (data / "classes.txt").read_text(encoding="utf-8").splitlines()[0].lstrip("\ufeff") != ""
    classes = [line.rsplit(" ", 1)[0] for line in (data / "classes.txt").read_text().splitlines()]
    assert classes == sorted(names), "the reference's label map: sorted class names of the train CSV"
    assert not any(c.startswith("\ufeff") for c in classes)
    assert len((data / "train.txt").read_text().splitlines()) == TRAIN_PRESENT
    assert len((data / "val.txt").read_text().splitlines()) == VAL_VIDEOS
    report = json.loads((data / "prepare_report.json").read_text())
    assert len(report["missing"]) == NUM_CLASSES - TRAIN_PRESENT + 1
    assert "test" in done.stderr + done.stdout, "says what happened to the unlabelled test CSV"


def test_accumulated_ddp_training_equals_one_process(trained):
    base, _single, _ddp = trained
    one = load_checkpoint(base / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(base / "two" / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == TRAIN_PRESENT // 8
    for name, value in one["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(two["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_multi_view_eval_counts_every_video_once_and_equals_one_process(kinetics, trained):
    data, _, _ = kinetics
    base, _, _ = trained
    ckpt = str(base / "two" / "checkpoints" / "last.pt")
    args = ["eval", "--checkpoint", ckpt, "--dataset_path", str(data), "--clips", "3", "--crops", "3"]
    args += ["--workers", "0", "--json"]
    one = json.loads(stnet(*args, "--out", str(base / "eval1")).stdout)
    two = json.loads(stnet(*args, "--out", str(base / "eval2"), nproc=2).stdout)
    assert one["num_videos"] == two["num_videos"] == VAL_VIDEOS
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert two[key] == pytest.approx(one[key], abs=1e-9), key
