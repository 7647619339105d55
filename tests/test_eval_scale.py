"""Evaluation at Kinetics scale: per-video score sums gathered to rank 0, unreadable videos counted as
misses, and each distinct view of a short video scored once."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_stnet, tiny_argv
from stnet.cli import main
from stnet.config import load_config
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.distributed import DistInfo
from stnet.engine import evaluate
from stnet.inference import accuracy_lines
from stnet.loader import build_loader
from stnet.metrics import ScoreAccumulator
from stnet.model import build_model
from videos import write_colour_dataset, write_video

CLASSES = ["red", "green", "blue"]
TINY = tiny_argv(batch_size=4)


def test_views_split_or_whole_over_two_gloo_processes_give_the_old_numbers(tmp_path):
    out = tmp_path / "report.json"
    run_stnet(str(out), nproc=2, script=Path(__file__).parent / "ddp_scores.py", timeout=300)
    report = json.loads(out.read_text())
    for name in ("top1", "top5", "mean_class_accuracy"):
        old, new = report[name]
        assert new == old, name
    assert 0.1 < report["top1"][0] < 0.9  # a case where the averaging decides
    assert report["max_score_diff"] < 1e-6
    assert report["num_views"] == [4] * 10 and report["num_videos"] == 10  # video 0's repeat counted once
    assert json.loads(Path(f"{out}.rank1").read_text()) == {"merged": False}  # gathered to rank 0 only


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A freshly initialised whole StNet (the tiny one of TINY), as a weight file."""
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "stnet.pth"
    torch.save(build_model(cfg).state_dict(), path)
    return path


def test_an_unreadable_val_video_is_a_miss_unless_skipped(tmp_path, weights, capsys):
    root = write_colour_dataset(tmp_path / "data", CLASSES, {"val": 2})
    good = write_video(tmp_path / "good.mp4", 16).read_bytes()
    broken = root / "videos" / "red" / "broken.mp4"
    broken.write_bytes(good[: len(good) // 2])  # a real H.264 MP4 cut in half: no moov atom
    with open(root / "val.txt", "a") as f:
        f.write("videos/red/broken.mp4 0\n")
    args = ["eval", "--checkpoint", str(weights), "--dataset_path", str(root), "--clips", "2", *TINY]

    assert main([*args, "--json", "--out", str(tmp_path / "counted")]) == 0
    captured = capsys.readouterr()
    counted = json.loads(captured.out.strip().splitlines()[-1])
    assert captured.err.count(str(broken)) == 1  # named once, on stderr
    assert "unreadable video, counted as a miss" in captured.err
    assert (counted["num_videos"], counted["evaluated_videos"], counted["unreadable_videos"]) == (7, 6, 1)
    csv = (tmp_path / "counted" / "per_class.csv").read_text().splitlines()
    assert csv[1].startswith("0,red,3,") and csv[1].endswith(",1")  # red: 3 listed, 1 unreadable

    assert main([*args, "--skip_unreadable", "--out", str(tmp_path / "skipped")]) == 0
    text = capsys.readouterr().out
    skipped = json.loads((tmp_path / "skipped" / "eval.json").read_text())
    assert (skipped["num_videos"], skipped["unreadable_videos"], skipped["skip_unreadable"]) == (6, 1, True)
    correct = round(counted["top1"] * 7)
    assert round(skipped["top1"] * 6) == correct and counted["top1"] == pytest.approx(correct / 7)
    assert (
        "over 6 videos (2 views each, softmax-averaged); unreadable=1, left out (--skip_unreadable)" in text
    )


def test_accuracy_lines_count_unreadable_videos():
    acc = ScoreAccumulator()
    acc.add(range(9), np.eye(3)[[0, 1, 2, 0, 1, 2, 1, 2, 0]], [0, 1, 2, 0, 1, 2, 0, 0, 1])
    acc.add_unreadable([9], [2])
    assert (
        accuracy_lines(acc.result())[0]
        == "top1_correct=6, tot=10, acc=60.00%, unreadable=1, counted as misses"
    )
    skipped = accuracy_lines(acc.result(skip_unreadable=True))
    assert skipped[0] == "top1_correct=6, tot=9, acc=66.67%, unreadable=1, left out (--skip_unreadable)"


class _Counting(nn.Module):
    """A fixed random linear classifier that counts the clips it is run on."""

    def __init__(self, inputs: int, classes: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(inputs, classes)
        self.clips = 0

    def forward(self, x):
        self.clips += len(x)
        return self.fc(x.flatten(1)) * 20  # sharp enough that views disagree


def test_identical_views_of_a_short_video_are_scored_once(tmp_path):
    """A 3-frame video sampled by 10 clips of T=2 segments: every clip is frames (0, 1), so of
    its 10 x 3 views only the 3 crops differ; a 40-frame video's 30 views all differ."""
    cfg = load_config(None, [*TINY, "--T", "2", "--N", "1", "--batch_size", "30"])
    samples = [
        Sample(write_video(tmp_path / "short.mp4", 3), 0),
        Sample(write_video(tmp_path / "long.mp4", 40), 1),
    ]
    ds = VideoClipDataset(samples, ClipSpec.from_config(cfg), "val", test_views=(10, 3))
    all_views = [ds[i][0] for i in range(2)]  # what each video's K x C views are
    model = _Counting(all_views[0][0].numel())
    with torch.no_grad():
        before = []  # the old way: every view through the model, softmax per view, mean per video
        for views in all_views:
            p = torch.softmax(model(views).double(), dim=1)
            before.append(p.mean(0).numpy())
    model.clips = 0
    loader = build_loader(ds, cfg, DistInfo(), torch.device("cpu"), train=False, batch_size=1)
    result = evaluate(model, loader, device=torch.device("cpu"), dist=DistInfo())
    assert model.clips == 3 + 30  # not 60
    np.testing.assert_allclose(result.scores, np.stack(before), rtol=1e-5, atol=1e-7)
    assert result.num_views.tolist() == [30, 30]
    views, _, view_ids, weights = ds.distinct_views(0)
    assert len(views) == 3 and view_ids.tolist() == [0, 1, 2] and weights.tolist() == [10, 10, 10]
    assert torch.equal(views, all_views[0][:3])
