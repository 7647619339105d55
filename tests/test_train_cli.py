"""`stnet train` and `stnet eval` end to end on tiny real video files, and their one-line errors."""

import json

import numpy as np
import pytest

from conftest import tiny_argv
from stnet.cli import main
from videos import write_colour_dataset

CLASSES = ["red", "green", "blue"]
TINY = tiny_argv(lr=0.01, eval_start_epoch=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 classes of 16-frame mp4 clips told apart by their colour, with train/val lists."""
    return write_colour_dataset(tmp_path_factory.mktemp("colours"), CLASSES, {"train": 4, "val": 2})


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(out),
            "--num_epochs",
            "3",
            "--lr_milestones",
            "2",
            *TINY,
        ]
    )
    assert code == 0
    return out


def test_train_writes_checkpoints_metrics_and_curves(trained):
    for name in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/stnet-0003.pt",
        "metrics.jsonl",
        "curves.png",
        "config.yaml",
    ):
        assert (trained / name).is_file(), name
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["val_videos"] == 6 for r in records), "every val video is evaluated, none dropped"
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert [r["lr"] for r in records] == [0.01, 0.01, 0.001]


def test_eval_matches_the_evaluation_during_training(trained, dataset, capsys):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: (r["val_top1"], r["epoch"]))
    ckpt = trained / "checkpoints" / "best.pt"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--dataset_path",
                str(dataset),
                "--json",
                "--precision",
                "fp32",
                "--out",
                str(trained / "eval-best"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["top1"] == best["val_top1"] and report["top5"] == best["val_top5"]


def test_eval_multi_view_reports(trained, dataset, capsys):
    ckpt = trained / "checkpoints" / "best.pt"
    out = trained / "eval"
    code = main(
        [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--dataset_path",
            str(dataset),
            "--clips",
            "2",
            "--crops",
            "3",
            "--out",
            str(out),
            "--workers",
            "0",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "over 6 videos (6 views each, softmax-averaged)" in text
    assert "result: {'top_1_accuracy': " in text and f"ckpt= {ckpt}" in text
    report = json.loads((out / "eval.json").read_text())
    assert report["num_videos"] == 6 and report["split"] == "val" and report["unreadable_videos"] == 0
    csv = (out / "per_class.csv").read_text().splitlines()
    assert csv[0] == "class_index,class_name,videos,correct,accuracy,unreadable" and csv[1].startswith(
        "0,red,2,"
    )
    scores = np.load(out / "scores.npz")
    assert scores["scores"].shape == (6, 3)
    assert (out / "confusion.png").stat().st_size > 1000


def test_eval_json_and_train_split(trained, dataset, capsys):
    ckpt = trained / "checkpoints" / "last.pt"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--dataset_path",
                str(dataset),
                "--split",
                "train",
                "--json",
                "--out",
                str(trained / "eval-train"),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["num_videos"] == 12 and report["split"] == "train"


def test_resume_auto_continues_to_more_epochs(trained, dataset, capsys):
    code = main(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(trained),
            "--num_epochs",
            "4",
            "--lr_milestones",
            "2",
            "--resume",
            "auto",
            *TINY,
        ]
    )
    assert code == 0
    assert "resumed from" in capsys.readouterr().err  # log lines go to stderr
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset_path", "/nonexistent/data"], "dataset folder not found: /nonexistent/data"),
        (["--class_num", "5"], "has 3 classes, class_num is 5: set --class_num 3"),
    ],
)
def test_train_input_errors_are_one_line(dataset, tmp_path, capsys, extra, message):
    argv = ["train", "--dataset_path", str(dataset), "--output_dir", str(tmp_path), *TINY, *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("stnet: error: ")


def test_missing_dataset_path_and_empty_split(tmp_path, capsys):
    assert main(["train", "--output_dir", str(tmp_path), *TINY]) == 1
    assert "dataset_path is not set" in capsys.readouterr().err
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "val.txt").write_text("")
    assert main(["train", "--dataset_path", str(tmp_path), "--output_dir", str(tmp_path), *TINY]) == 1
    assert "the train split of" in capsys.readouterr().err


def test_resume_with_another_architecture_is_one_line(trained, dataset, tmp_path, capsys):
    argv = [
        "train",
        "--dataset_path",
        str(dataset),
        "--output_dir",
        str(tmp_path),
        *TINY,
        "--resume",
        str(trained / "checkpoints" / "last.pt"),
        "--depth",
        "34",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "another model (depth 18 → 34)" in err and err.count("\n") == 1


def test_eval_of_imagenet_weights_or_missing_checkpoint(dataset, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset_path", str(dataset)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
