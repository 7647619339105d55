"""`stnet demo --quick`: the whole workflow on the synthetic motion dataset, end to end."""

import json

from stnet.cli import main
from stnet.demo import QUICK


def test_quick_demo_runs_every_step_and_learns(tmp_path, capsys):
    demo = tmp_path / "demo_out"
    assert main(["demo", "--quick", "--out", str(demo)]) == 0
    printed = capsys.readouterr().out
    for command in ("synth", "prepare list", "train", "eval", "export", "infer", "predict"):
        assert f"$ stnet {command} " in printed
    for name in (
        "synth/train.txt",
        "synth/test.txt",
        "data/classes.txt",
        "run/checkpoints/best.pt",
        "run/curves.png",
        "eval/confusion.png",
        "eval/per_class.csv",
        "stnet_demo.onnx",
        "infer/acc.log",
        "summary.json",
    ):
        assert (demo / name).is_file(), name
    summary = json.loads((demo / "summary.json").read_text())
    chance = 1 / len(QUICK.classes)
    assert summary["val_top1"] >= chance + 0.5  # clearly above chance (measured 95.0 %)
    assert summary["onnx_top1"] == summary["val_top1"]  # ONNX Runtime agrees with `stnet eval`
    acc_log = (demo / "infer" / "acc.log").read_text().splitlines()[0]
    correct = round(summary["val_top1"] * summary["val_videos"])
    assert acc_log.startswith(f"top1_correct={correct}, tot={summary['val_videos']}, ")
    # predictions with class names, one line per held-out video
    test_videos = len(QUICK.classes) * QUICK.test_per_class
    predicted = [line for line in printed.splitlines() if ".mp4: " in line]
    assert len(predicted) == test_videos == summary["test_videos"]
    assert all(line.split(": ")[1].split()[0] in QUICK.classes for line in predicted)
    assert f"val top-1 {100 * summary['val_top1']:.1f} %" in printed
    assert summary["total_seconds"] > 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "is not a demo output folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
