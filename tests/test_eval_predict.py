"""Evaluation and prediction with other settings than training: eval transforms on every split, the
checkpoint's weight-shaping keys vs overridable ones, options and videos in any order, JSON-only stdout,
the resize mode from prepare to predict, class-order checks, truncated videos, report folders."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import tiny_argv
from stnet.cli import main, split_config_flags
from stnet.config import MODEL_KEYS, WEIGHT_KEYS, Config, load_config
from stnet.datasets import ClipSpec, Sample, VideoClipDataset, build_dataset
from stnet.errors import ConfigError
from stnet.model import StNet
from stnet.runners import load_exported
from videos import write_colour_dataset, write_video

CLASSES = ["red", "green", "blue"]
TINY = tiny_argv()
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_colour_dataset(tmp_path_factory.mktemp("colours"), CLASSES, {"train": 2, "val": 1})


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--dataset_path", str(dataset), "--output_dir", str(out), "--num_epochs", "1", *TINY]
    assert main(argv) == 0
    return out / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(path)]) == 0
    return path


def _stnet(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "stnet", *argv], capture_output=True, text=True, env=env)


def _eval_json(capsys, *argv: str) -> dict:
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------------------------------
# 14.3: the split chooses the list, evaluation always uses the eval transforms


def test_eval_and_infer_on_the_train_split_are_deterministic_and_multi_view(
    checkpoint, onnx_model, dataset, tmp_path, capsys
):
    common = ["--checkpoint", str(checkpoint), "--dataset_path", str(dataset), "--split", "train"]
    first = _eval_json(capsys, *common, "--out", str(tmp_path / "a"))
    second = _eval_json(capsys, *common, "--out", str(tmp_path / "b"))
    assert first["num_videos"] == 6 and first == second
    a, b = (np.load(tmp_path / d / "scores.npz")["scores"] for d in "ab")
    assert np.array_equal(a, b), "the same scores: no random offsets, crops or flips"
    multi = _eval_json(capsys, *common, "--clips", "2", "--crops", "3", "--out", str(tmp_path / "c"))
    assert multi["num_videos"] == 6

    infer = ["infer", "--model", str(onnx_model), "--dataset_path", str(dataset), "--split", "train"]
    runs = []
    for name in ("d", "e"):
        assert main([*infer, "--clips", "2", "--workers", "0", "--out", str(tmp_path / name)]) == 0
        runs.append(capsys.readouterr().out.splitlines()[:2])  # the top-1 and top-5 lines
    assert runs[0] == runs[1] and runs[0][0].startswith("top1_correct=") and "tot=6," in runs[0][0]


def test_eval_and_infer_read_the_test_split(checkpoint, onnx_model, dataset, tmp_path, capsys):
    """prepare (test annotations with labels) and synth write test.txt; eval and infer read it."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    common = ["--checkpoint", str(checkpoint), "--dataset_path", str(data), "--split", "test"]
    assert main(["eval", *common, "--out", str(tmp_path / "a")]) == 1
    assert "has no test split (test.txt)" in capsys.readouterr().err
    (data / "test.txt").write_text("".join((data / "train.txt").read_text().splitlines(True)[:2]))
    assert _eval_json(capsys, *common, "--out", str(tmp_path / "b"))["num_videos"] == 2
    infer = ["infer", "--model", str(onnx_model), "--dataset_path", str(data), "--split", "test"]
    assert main([*infer, "--workers", "0", "--out", str(tmp_path / "c")]) == 0
    assert "tot=2," in capsys.readouterr().out


def test_a_dataset_evaluated_without_augmentation_repeats_itself(dataset):
    cfg = load_config(None, [*TINY, "--dataset_path", str(dataset)])
    train = build_dataset(cfg, "train", augment=False)
    assert not train.train and torch.equal(train[0][0], train[0][0])
    train.set_epoch(1)
    again = build_dataset(cfg, "train", augment=False)
    assert torch.equal(train[0][0], again[0][0])
    views = build_dataset(cfg, "train", augment=False, test_views=(2, 3))
    assert views[0][0].shape == (6, 2, 6, 32, 32)
    with pytest.raises(ValueError, match="evaluation"):
        build_dataset(cfg, "train", test_views=(2, 3))  # augmenting: no test views


# ----------------------------------------------------------------------------------------------------
# 14.4 / 13.17: weight-shaping keys come from the checkpoint, the rest can be overridden


def test_T_and_sizes_override_a_training_checkpoint(checkpoint):
    from stnet.checkpoint import checkpoint_config, model_for_checkpoint

    cfg = checkpoint_config(checkpoint, None, ["--T", "5", "--batch_size", "1", "--short_size", "40"])
    assert (cfg.T, cfg.batch_size, cfg.short_size, cfg.depth) == (5, 1, 40, 18)
    model, cfg, classes = model_for_checkpoint(checkpoint, cfg)
    assert cfg.T == 5 and classes == CLASSES
    assert model(torch.zeros(1, 5, 6, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--depth", "34"], "--depth 34 conflicts with the checkpoint"),
        (["--class_num", "8"], "--class_num 8 conflicts with the checkpoint"),
        (["--num_classes", "8"], "--class_num 8 conflicts with the checkpoint"),
        (["--N", "3"], "--N 3 conflicts with the checkpoint"),
        (["--xception", "full"], "--xception full conflicts with the checkpoint"),
    ],
)
def test_a_conflicting_weight_key_is_one_line(checkpoint, dataset, capsys, flags, message):
    argv = ["eval", "--checkpoint", str(checkpoint), "--dataset_path", str(dataset), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "come from the checkpoint" in err and len(err.splitlines()) == 1, err
    assert (
        main(["predict", str(dataset / "videos/red/val_0.mp4"), "--checkpoint", str(checkpoint), *flags]) == 2
    )
    assert message in capsys.readouterr().err


def test_a_conflicting_key_in_a_config_file_names_the_file(checkpoint, dataset, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("depth: 50\nT: 4\n")
    argv = ["eval", "--checkpoint", str(checkpoint), "--dataset_path", str(dataset), "--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"depth: 50 in {config} conflicts with the checkpoint" in err and "depth 18" in err
    config.write_text("depth: 18\nT: 4\n")  # the same value is no conflict
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0


def test_the_same_value_as_the_checkpoint_is_accepted(checkpoint, dataset, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--dataset_path", str(dataset), "--out", str(tmp_path)]
    assert _eval_json(capsys, *argv, "--depth", "18", "--class_num", "3")["num_videos"] == 3


def test_eval_with_another_T_changes_the_result(checkpoint, dataset, tmp_path, capsys):
    base = ["--checkpoint", str(checkpoint), "--dataset_path", str(dataset)]
    _eval_json(capsys, *base, "--out", str(tmp_path / "t2"))
    _eval_json(capsys, *base, "--T", "4", "--out", str(tmp_path / "t4"))
    t2, t4 = (np.load(tmp_path / d / "scores.npz")["scores"] for d in ("t2", "t4"))
    assert not np.allclose(t2, t4), "T=4 samples other frames than T=2"


def _predict_json(capsys, *argv: str) -> list[dict]:
    assert main(["predict", *argv, "--json"]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_options_and_videos_in_any_order(checkpoint, dataset, capsys):
    one = str(dataset / "videos/red/val_0.mp4")
    two = str(dataset / "videos/blue/val_0.mp4")
    ckpt = str(checkpoint)
    reference = _predict_json(capsys, one, two, "--checkpoint", ckpt, "--T", "4")
    assert [r["video"] for r in reference] == [one, two]
    for argv in (
        [one, "--checkpoint", ckpt, "--T", "4", two],
        ["--T", "4", one, two, "--checkpoint", ckpt],
        ["--checkpoint", ckpt, one, "--T=4", two, "--topk", "5"],
        [one, "--T", "4", two, "--checkpoint=" + ckpt],
    ):
        assert _predict_json(capsys, *argv) == reference, argv
    at_t2 = _predict_json(capsys, one, two, "--checkpoint", ckpt)
    assert [r["video"] for r in at_t2] == [one, two] and at_t2 != reference, "--T is used"


def test_split_config_flags():
    from stnet.cli import build_parser

    parser = build_parser()
    predict = parser._subparsers._group_actions[0].choices["predict"]
    own, config = split_config_flags(
        predict, ["a.mp4", "--T", "8", "--json", "b.mp4", "--lr=0.1", "--topk", "2"]
    )
    assert own == ["a.mp4", "--json", "b.mp4", "--topk", "2"] and config == ["--T", "8", "--lr=0.1"]
    own, config = split_config_flags(predict, ["--image_mean", "-0.5,0,0", "v.mp4"])
    assert own == ["v.mp4"] and config == ["--image_mean", "-0.5,0,0"]


# ----------------------------------------------------------------------------------------------------
# 15.4: the model keys in one place


def test_model_keys_are_stnets_arguments():
    import inspect

    params = set(inspect.signature(StNet).parameters)
    kwargs = Config().model_kwargs()
    assert set(kwargs) <= params and set(WEIGHT_KEYS) < set(MODEL_KEYS)
    assert len(kwargs) == len(MODEL_KEYS) and "dropout" in kwargs and kwargs["num_classes"] == 101


# ----------------------------------------------------------------------------------------------------
# 14.5: --json writes only JSON to stdout; progress and logs go to stderr


def test_json_output_is_parseable_through_a_pipe(checkpoint, onnx_model, dataset, tmp_path):
    run = _stnet(
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--dataset_path",
        str(dataset),
        "--T",
        "3",
        "--out",
        str(tmp_path / "e"),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["num_videos"] == 3
    assert "eval val [" in run.stderr  # the progress line went to stderr

    run = _stnet(
        "infer",
        "--model",
        str(onnx_model),
        "--dataset_path",
        str(dataset),
        "--workers",
        "0",
        "--out",
        str(tmp_path / "i"),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["num_videos"] == 3 and "latency_ms" in report and "infer val [" in run.stderr

    video = str(dataset / "videos/green/val_0.mp4")
    run = _stnet("predict", video, "--checkpoint", str(checkpoint), "--T", "3", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["video"] == video


def test_without_json_results_still_go_to_stdout(checkpoint, dataset, tmp_path, capsys):
    assert (
        main(
            ["eval", "--checkpoint", str(checkpoint), "--dataset_path", str(dataset), "--out", str(tmp_path)]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "top1 " in captured.out and "result: {'top_1_accuracy'" in captured.out
    assert "eval val [" not in captured.out


# ----------------------------------------------------------------------------------------------------
# 14.7: the resize mode travels from prepare through training and export to predict


def _wide_frames(n: int) -> list[np.ndarray]:
    h, w = 72, 128  # 16:9
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = xx * 255 // (w - 1)
        f[..., 1] = yy * 200 // (h - 1) + i * 3
        f[..., 2] = 60
        frames.append(f)
    return frames


def test_predict_equals_eval_on_a_fixed_aspect_store(tmp_path, capsys):
    src = tmp_path / "src"
    write_video(src / "wide.mp4", 16, width=128, height=72, frames=_wide_frames(16))
    (src / "train.txt").write_text("wide.mp4 0\n")
    (src / "val.txt").write_text("wide.mp4 0\n")
    store = tmp_path / "store"
    lists = ["--list", f"train={src / 'train.txt'}", "--list", f"val={src / 'val.txt'}"]
    prep = ["prepare", "list", "--root", str(src), *lists, "--out", str(store), "--fixed-aspect"]
    assert main([*prep, "--short-side", "36", "--quality", "100", "--workers", "1", "--quiet"]) == 0
    tiny = [*TINY[: TINY.index("--class_num")], "--class_num", "1", "--batch_size", "1", "--workers", "0"]
    run = tmp_path / "run"
    train = ["train", "--dataset_path", str(store), "--output_dir", str(run), "--num_epochs", "1"]
    assert main([*train, *tiny, "--run_eval", "false", "--precision", "fp32"]) == 0
    checkpoint = run / "checkpoints" / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["config"]["fixed_aspect"] is True
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(onnx)]) == 0
    capsys.readouterr()
    info = load_exported(onnx).info
    assert info.fixed_aspect is True

    cfg = info.config(dataset_path=str(store))
    evaluated = build_dataset(cfg, "val", augment=False)[0][0]
    spec = ClipSpec.from_config(info.config())  # what predict builds from the model file
    predicted = VideoClipDataset([Sample(src / "wide.mp4", 0)], spec, "val", augment=False)[0][0]
    diff = (evaluated - predicted).abs()
    # same geometry; what is left is resampling twice (prepare, then the crop) vs once.
    # With an aspect-keeping resize in predict: max 0.39, mean 0.069.
    assert float(diff.max()) < 0.1 and float(diff.mean()) < 0.02, (float(diff.max()), float(diff.mean()))


# ----------------------------------------------------------------------------------------------------
# 14.11: eval compares the dataset's class names with the checkpoint's


def test_eval_refuses_classes_in_another_order(checkpoint, dataset, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "val.txt").write_text((dataset / "val.txt").read_text().replace("videos/", f"{dataset}/videos/"))
    (other / "classes.txt").write_text("blue 0\ngreen 1\nred 2\n")  # sorted, not the training order
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--dataset_path",
                str(other),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "classes differ from the model's at 2 positions" in err and len(err.splitlines()) == 1
    assert "0: dataset 'blue', model 'red'; 2: dataset 'red', model 'blue'" in err
    assert not (tmp_path / "r" / "eval.json").exists()


# ----------------------------------------------------------------------------------------------------
# 14.12: normalisation on the 0-1 scale


@pytest.mark.parametrize(
    "key, values, fix",
    [
        ("image_mean", "123.675,116.28,103.53", "0.485,0.456,0.406"),
        ("image_std", "58.395,57.12,57.375", "0.229,0.224,0.225"),
    ],
)
def test_normalisation_on_the_pixel_scale_is_refused(capsys, key, values, fix):
    with pytest.raises(ConfigError, match=f"use --{key} {fix}"):
        load_config(None, [f"--{key}", values])
    assert main(["config", f"--{key}", values]) == 2
    err = capsys.readouterr().err
    assert "0-255 pixel scale" in err and fix in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------------
# 13.13 / 13.14: predict without videos, and on a truncated video


def test_predict_without_a_video_fails(onnx_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    named = tmp_path / "x.mp4"
    named.mkdir()
    for folder in (empty, named):
        assert main(["predict", str(folder), "--model", str(onnx_model)]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and f"{folder}: no video found in this folder" in captured.err


def _truncated_mp4(tmp_path: Path, frames: int = 40) -> Path:
    """A real H.264 mp4 with its index in front (faststart) and the data of its second half of frames
    cut off: it opens, announces every frame, and decoding stops early."""
    whole = write_video(tmp_path / "whole.mp4", frames, width=160, height=96)
    fast = tmp_path / "fast.mp4"
    with av.open(str(whole)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    with av.open(str(fast)) as container:
        where = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: where[frames // 2]])  # the data of the first half of the frames
    return cut


def test_predict_warns_about_a_truncated_video(onnx_model, dataset, tmp_path, capsys):
    cut = _truncated_mp4(tmp_path)
    good = dataset / "videos/red/val_0.mp4"
    assert main(["predict", str(cut), str(good), "--model", str(onnx_model)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("stnet: warning:")]
    assert len(warnings) == 1 and f"{cut}: decoded " in warnings[0] and " of 40 frames" in warnings[0]
    decoded = int(warnings[0].split("decoded ")[1].split()[0])
    assert 0 < decoded < 40
    assert len(captured.out.splitlines()) == 2  # both answered

    objects = _predict_json(capsys, str(cut), str(good), "--model", str(onnx_model))
    assert objects[0]["decoded_frames"] == decoded and objects[0]["announced_frames"] == 40
    assert "top" in objects[0] and "warning" in objects[0] and "warning" not in objects[1]

    assert main(["predict", str(cut), str(good), "--model", str(onnx_model), "--strict"]) == 1
    captured = capsys.readouterr()
    assert f"{cut}: decoded {decoded} of 40 frames" in captured.err and "--strict" in captured.err
    assert len(captured.out.splitlines()) == 1  # only the good video


# ----------------------------------------------------------------------------------------------------
# 13.8: the report folder is checked first; the metrics are printed even if writing them fails


def test_an_unwritable_report_folder_fails_before_evaluating(
    checkpoint, onnx_model, dataset, tmp_path, capsys
):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder\n")
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--dataset_path",
        str(dataset),
        "--out",
        str(blocker / "r"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("stnet: error: ") and str(blocker / "r") in err and len(err.splitlines()) == 1
    assert "eval val [" not in err, "refused before evaluating"
    infer = ["infer", "--model", str(onnx_model), "--dataset_path", str(dataset), "--out", str(blocker / "r")]
    assert main([*infer, "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert str(blocker / "r") in err and "infer val [" not in err and len(err.splitlines()) == 1


def test_metrics_are_printed_when_writing_the_reports_fails(
    checkpoint, onnx_model, dataset, tmp_path, capsys, monkeypatch
):
    import stnet.evaluation
    import stnet.inference

    def disk_full(path, *_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(stnet.evaluation, "atomic_write_bytes", disk_full)
    monkeypatch.setattr(
        stnet.evaluation, "_write_reports", lambda result, classes, out, *a: disk_full(out / "per_class.csv")
    )
    argv = [
        "eval",
        "--checkpoint",
        str(checkpoint),
        "--dataset_path",
        str(dataset),
        "--out",
        str(tmp_path / "e"),
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "top1 " in captured.out and "result: {'top_1_accuracy'" in captured.out
    (error,) = [line for line in captured.err.splitlines() if line.startswith("stnet: error:")]
    assert "no space left on device" in error and "per_class.csv" in error

    monkeypatch.setattr(stnet.inference, "atomic_write_bytes", disk_full)
    infer = ["infer", "--model", str(onnx_model), "--dataset_path", str(dataset), "--workers", "0"]
    assert main([*infer, "--out", str(tmp_path / "i"), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_videos"] == 3
    assert "no space left on device" in captured.err and "acc.log" in captured.err
