"""`stnet demo --quick`: the whole workflow on the synthetic motion dataset, end to end."""

import json
from pathlib import Path

import numpy as np
import pytest

from stnet.checkpoint import eval_model
from stnet.cli import main
from stnet.datasets import ClipSpec
from stnet.demo import QUICK_PRESET, DemoError, subprocess_runner
from stnet.explain import PointingScore, pointing_game
from stnet.synth import box_mask, video_boxes


@pytest.mark.slow
def test_quick_demo_runs_every_step_and_learns(tmp_path, capsys):
    demo = tmp_path / "demo_out"
    assert main(["demo", "--quick", "--out", str(demo)]) == 0
    printed = capsys.readouterr().out
    for command in ("synth", "prepare list", "train", "eval", "export", "infer", "predict", "explain"):
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
    chance = 1 / len(QUICK_PRESET.classes)
    assert summary["val_top1"] >= chance + 0.5  # clearly above chance (measured 98.3 % on an EPYC)
    assert summary["onnx_top1"] == summary["val_top1"]  # ONNX Runtime agrees with `stnet eval`
    acc_log = (demo / "infer" / "acc.log").read_text().splitlines()[0]
    correct = round(summary["val_top1"] * summary["val_videos"])
    assert acc_log.startswith(f"top1_correct={correct}, tot={summary['val_videos']}, ")
    # `predict --json`: one JSON object per held-out video, top-3 class names with probabilities
    test_videos = len(QUICK_PRESET.classes) * QUICK_PRESET.test_per_class
    predicted = [json.loads(line) for line in printed.splitlines() if line.startswith('{"video": ')]
    assert len(predicted) == test_videos == summary["test_videos"]
    assert all(len(p["top"]) == 3 and p["top"][0]["class"] in QUICK_PRESET.classes for p in predicted)
    right = sum(Path(p["video"]).parent.name == p["top"][0]["class"] for p in predicted)
    assert summary["test_correct"] == right
    assert f"val top-1 {100 * summary['val_top1']:.1f} %" in printed
    assert Path(summary["explanation"]).is_file()  # the Grad-CAM grid of the first test video
    pointing, neighbours = explanations_and_embeddings(demo, tmp_path / "features")
    # layer2's 6x6 maps point at the moving object: over the 120 val videos 24.2 % of the mass and 51.8 % of
    # the peaks fall in a box covering 8.8 % of the frame (layer4's 2x2 maps at 48 px cannot: 10.0 %)
    assert pointing.videos == 24 and pointing.mass_in_box > 1.8 * pointing.area_of_box
    assert pointing.hit_rate > 3 * pointing.area_of_box
    assert neighbours > 0.5  # most val videos' nearest neighbour is of their class (measured 90 %)


def explanations_and_embeddings(demo: Path, out: Path, videos: int = 24) -> tuple[PointingScore, float]:
    """What the demo's learnt model shows: the pointing game of its Grad-CAM (layer2) on ``videos`` val
    videos spread over the classes, against the moving object's boxes (drawn again from the synth
    settings), and the share of val videos whose nearest other clip embedding (``stnet features``) is
    of the same class."""
    checkpoint = demo / "run" / "checkpoints" / "best.pt"
    model, cfg, _ = eval_model(checkpoint)
    spec = ClipSpec.from_config(cfg)
    settings = json.loads((demo / "synth" / "synth.json").read_text())["settings"]
    size = settings["size"]
    val = [line.split()[0] for line in (demo / "synth" / "val.txt").read_text().splitlines() if line.strip()]
    chosen = val[:: max(1, len(val) // videos)][:videos]

    def with_boxes():
        for rel in chosen:
            motion, index = Path(rel).parent.name, int(Path(rel).stem.rsplit("_", 1)[1])
            boxes = video_boxes(motion, index, seed=settings["seed"], size=size, frames=settings["frames"])
            yield demo / "synth" / rel, lambda i, b=boxes: box_mask(b[i], size)

    pointing = pointing_game(model, spec, with_boxes(), layer="layer2")
    argv = ["features", "--dataset_path", str(demo / "data"), "--checkpoint", str(checkpoint)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    rows = np.load(out / "features.npy")
    labels = [line.rsplit(",", 1)[1] for line in (out / "index.csv").read_text().splitlines()[1:]]
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = unit @ unit.T - 2 * np.eye(len(rows))  # cosine; a clip is not its own neighbour
    nearest = similarity.argmax(axis=1)
    same = float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))
    print(
        f"{pointing.line()}; nearest neighbour of the same class for {100 * same:.1f} % of "
        f"{len(rows)} val videos"
    )
    return pointing, same


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "is not a demo output folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_the_runner_runs_the_real_command_and_returns_its_stdout(capsys):
    printed = subprocess_runner(["config", "--depth", "34"])
    assert "depth: 34" in printed and printed == capsys.readouterr().out  # shown as well as returned


def test_the_runner_raises_when_the_command_fails():
    with pytest.raises(DemoError, match="`stnet config` failed \\(exit code 2\\)"):
        subprocess_runner(["config", "--no_such_key", "1"])
