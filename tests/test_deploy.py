"""Deployment: `stnet export` (ONNX, torch.export, TorchScript) with self-verification, `stnet infer`
against `stnet eval`, and `stnet predict` on real encoded videos and on bad files."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from conftest import tiny_argv
from reference_recipe import reference_params
from stnet import StNet
from stnet import export as export_mod
from stnet.cli import main
from stnet.config import load_config
from stnet.export import export_model, verify
from stnet.inference import run_infer
from stnet.metrics import load_npz
from stnet.mindspore_ckpt import write_ckpt
from stnet.runners import ExportError, ModelInfo, load_exported
from videos import write_colour_dataset, write_video

CLASSES = ["red", "green", "blue"]
TINY = tiny_argv(T=3, lr=0.001, freeze_bn=True, lr_schedule="constant")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 classes of 16-frame mp4/avi clips told apart by their colour, with train/val lists."""
    root = tmp_path_factory.mktemp("colours")
    return write_colour_dataset(root, CLASSES, {"train": 4, "val": 3}, avi_too=True)


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--dataset_path", str(dataset), "--output_dir", str(out), "--num_epochs", "4", *TINY]
    assert main(args) == 0
    return out / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    for name in ("model.onnx", "model.pt2", "model.ts"):
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out / name)]) == 0
    return out


def test_export_embeds_everything_inference_needs(exported, capsys):
    proto = onnx.load(str(exported / "model.onnx"))
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    info = ModelInfo.from_json(meta["stnet"])
    assert info.class_names == CLASSES
    assert (info.T, info.N, info.size, info.short_size, info.recipe) == (3, 2, 32, 36, "kinetics400")
    assert info.mean == pytest.approx([0.485, 0.456, 0.406])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and T
    assert [d.dim_value for d in dims[2:]] == [6, 32, 32]
    assert not list(exported.glob("*.data"))  # one self-contained file
    for name in ("model.pt2", "model.ts"):
        assert load_exported(exported / name, trust=True).info == info


def test_every_format_matches_pytorch_at_other_batch_and_T(exported, checkpoint):
    from stnet.checkpoint import checkpoint_config, model_for_checkpoint

    model, _, _ = model_for_checkpoint(checkpoint, checkpoint_config(checkpoint, None, []))
    model.eval()
    x = torch.randn(3, 5, 6, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    for name in ("model.onnx", "model.pt2", "model.ts"):
        got = load_exported(exported / name, trust=True)(x.numpy())
        assert np.abs(got - expected).max() < 1e-4, name


def test_verification_catches_a_different_model(exported, tmp_path):
    runner = load_exported(exported / "model.onnx")
    other = StNet(num_classes=3, T=3, N=2, depth=18)
    with pytest.raises(ExportError, match=r"verification failed: .* differs from PyTorch by up to"):
        verify(runner, other)
    # export_model verifies before writing: a failing export leaves nothing behind
    info = runner.info
    target = tmp_path / "bad.onnx"

    class Drifting(torch.nn.Module):  # exports one graph, then computes something else in eager mode
        def __init__(self):
            super().__init__()
            self.inner = StNet(num_classes=3, T=3, N=2, depth=18).eval()

        def forward(self, x):
            out = self.inner(x)
            return out if torch.compiler.is_exporting() else out + 1e-2

    with pytest.raises(ExportError, match="verification failed"):
        export_model(Drifting(), info, target)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_infer_equals_eval_and_writes_the_reference_line(exported, checkpoint, dataset, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    eval_result, _ = load_npz(tmp_path / "eval" / "scores.npz")
    assert evaluated["top1"] >= 0.5  # the model learned something, so the comparison means something
    for name in ("model.onnx", "model.pt2", "model.ts"):
        report = run_infer(
            load_exported(exported / name, trust=True),
            dataset,
            out_dir=tmp_path / name,
            batch_size=2,
            workers=0,
        )
        assert report.result.top1 == evaluated["top1"] and report.result.top5 == evaluated["top5"]
        np.testing.assert_array_equal(report.result.predictions, eval_result.predictions)
        np.testing.assert_allclose(report.result.scores, eval_result.scores, atol=1e-5)

    out = tmp_path / "cli"
    args = ["infer", "--model", str(exported / "model.onnx"), "--dataset_path", str(dataset)]
    assert main([*args, "--out", str(out), "--threads", "1", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    correct = round(evaluated["top1"] * 9)
    line = f"top1_correct={correct}, tot=9, acc={100 * correct / 9:.2f}%"
    assert line in printed
    log = (out / "acc.log").read_text().splitlines()
    assert log[0] == line and log[1].startswith("top5_correct=9, tot=9, acc=100.00%")
    assert log[2].startswith("latency per clip: mean ") and "p50" in log[2] and "p99" in log[2]
    summary = json.loads((out / "infer.json").read_text())
    assert summary["num_videos"] == 9 and summary["clips_per_s"] > 0
    # default output folder: beside the model
    assert main([*args, "--workers", "0"]) == 0
    assert (exported / "acc.log").read_text().splitlines()[0] == line


def test_infer_refuses_a_dataset_with_other_classes(exported, dataset, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "val.txt").write_text((dataset / "val.txt").read_text().replace("videos/", f"{dataset}/videos/"))
    (other / "classes.txt").write_text("cyan 0\nmagenta 1\nyellow 2\n")
    assert main(["infer", "--model", str(exported / "model.onnx"), "--dataset_path", str(other)]) == 1
    err = capsys.readouterr().err
    assert "classes differ from the model's at 3 positions (0: dataset 'cyan', model 'red'; 1: " in err


def test_predict_prints_topk_for_files_and_folders(exported, dataset, capsys):
    videos = dataset / "videos"
    args = ["predict", str(videos / "blue" / "val_0.mp4"), str(videos / "red"), "--topk", "2"]
    assert main([*args, "--model", str(exported / "model.onnx")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 7  # the file, then red/ recursively (4 train + 3 val, mp4 and avi)
    assert lines[0].startswith(f"{videos / 'blue' / 'val_0.mp4'}: ")
    assert lines[1].startswith(f"{videos / 'red' / 'train_0.mp4'}: ")
    for line in lines:
        names = line.split(": ", 1)[1].split(", ")
        assert len(names) == 2 and all(n.split()[0] in CLASSES for n in names)

    assert main([*args, "--model", str(exported / "model.pt2"), "--json", "--trust-model"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["video"] for o in objects] == [line.split(": ")[0] for line in lines]
    for obj in objects:
        probs = [t["prob"] for t in obj["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert {t["class"] for t in obj["top"]} <= set(CLASSES)


def test_predict_with_the_checkpoint_agrees_with_the_export(exported, checkpoint, dataset, capsys):
    video = str(dataset / "videos" / "green" / "val_1.avi")
    assert main(["predict", video, "--model", str(exported / "model.onnx"), "--json", "--topk", "3"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", video, "--checkpoint", str(checkpoint), "--json", "--topk", "3"]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in from_onnx["top"]] == [t["class"] for t in from_checkpoint["top"]]
    for a, b in zip(from_onnx["top"], from_checkpoint["top"], strict=True):
        assert a["prob"] == pytest.approx(b["prob"], abs=1e-5)


def test_predict_reports_bad_files_and_goes_on(exported, dataset, tmp_path, capsys):
    good = dataset / "videos" / "green" / "val_0.mp4"
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:300])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mkv"
    paths = [str(p) for p in (truncated, good, text, empty, missing)]
    assert main(["predict", *paths, "--model", str(exported / "model.onnx")]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[0].startswith(f"{good}: ")
    errors = [line for line in captured.err.splitlines() if line.startswith("stnet: error:")]
    assert len(errors) == 4
    for path, line in zip((truncated, text, empty, missing), errors, strict=True):
        assert str(path) in line
    assert "4 of the videos could not be read" in captured.err
    assert main(["predict", *paths, "--model", str(exported / "model.onnx"), "--json"]) == 1
    objects = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [("error" in o) for o in objects] == [True, False, True, True, True]


def test_one_line_errors(exported, checkpoint, tmp_path, capsys):
    cases = [
        (
            ["infer", "--model", str(tmp_path / "nope.onnx"), "--dataset_path", str(tmp_path)],
            "model not found",
        ),
        (
            ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.zip")],
            "cannot tell the format",
        ),
        (["predict", "x.mp4"], "give exactly one of --model"),
        (["predict", "x.mp4", "--model", str(checkpoint)], "cannot tell the format of"),
    ]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    cases.append((["predict", "x.mp4", "--model", str(junk)], "not a readable stnet onnx model"))
    for args, message in cases:
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_converted_checkpoint_carries_its_description(exported, checkpoint, dataset, tmp_path, capsys):
    """`stnet convert` of a training checkpoint keeps its config and class names in the safetensors
    metadata: eval, export and predict use the file with no --config flags, as they use the checkpoint."""
    weights = tmp_path / "best.safetensors"
    assert main(["convert", str(checkpoint), str(weights)]) == 0
    results = []
    for source in (checkpoint, weights):
        out = tmp_path / f"eval-{source.suffix[1:]}"
        assert main(["eval", "--checkpoint", str(source), "--out", str(out), "--json"]) == 0
        results.append(
            (json.loads(capsys.readouterr().out.strip().splitlines()[-1]), load_npz(out / "scores.npz"))
        )
    (from_ckpt, (ckpt_scores, ckpt_classes)), (from_weights, (scores, classes)) = results
    assert from_weights["top1"] == from_ckpt["top1"] and classes == ckpt_classes == CLASSES
    np.testing.assert_array_equal(scores.scores, ckpt_scores.scores)

    assert main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "w.onnx")]) == 0
    assert load_exported(tmp_path / "w.onnx").info == load_exported(exported / "model.onnx").info
    video = next(dataset.rglob("*.mp4"))
    for source in (checkpoint, weights):
        capsys.readouterr()
        assert main(["predict", str(video), "--checkpoint", str(source), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"])
    assert results[-1] == results[-2]

    # a model-defining flag that disagrees with the file is refused, as for the checkpoint
    assert main(["eval", "--checkpoint", str(weights), "--depth", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--depth 50 conflicts with the checkpoint" in err and len(err.splitlines()) == 1


def test_malformed_description_metadata_is_one_line(checkpoint, tmp_path, capsys):
    from safetensors.torch import save_file

    from stnet.checkpoint import load_checkpoint
    from stnet.weights import read_weights

    tensors, _ = read_weights(checkpoint)
    saved = load_checkpoint(checkpoint)["config"]
    cases = [  # (metadata text, what the one line says, exit code: 1 unreadable file, 2 bad setting)
        ("{not json", "stnet_config metadata is not valid JSON", 1),
        ('["depth", 18]', "stnet_config metadata is not a JSON object", 1),
        (json.dumps({**saved, "depth": "__import__('os').system('x')"}), "depth", 2),
        ('{"depth": 18}', "stnet_config metadata does not give class_num, N, xception, stem_pool", 1),
        (json.dumps({**saved, "depth": 34}), "does not fit this model (StNet depth 34", 1),
    ]
    for text, message, code in cases:
        path = tmp_path / "w.safetensors"
        save_file(tensors, str(path), metadata={"stnet_config": text})
        assert main(["eval", "--checkpoint", str(path)]) == code, text
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
        path.unlink()


def test_predict_with_a_converted_reference_checkpoint(tmp_path, capsys):
    """A MindSpore reference StNet-R50 (the parity fixture's weights) classifies a real video directly
    and after `stnet convert`, with the same numbers."""
    ckpt = tmp_path / "stnet_reference.ckpt"
    write_ckpt(ckpt, reference_params())
    converted = tmp_path / "stnet_reference.safetensors"
    assert main(["convert", str(ckpt), str(converted)]) == 0
    video = write_video(tmp_path / "clip.mp4", 40, height=120, width=160)
    (tmp_path / "names.txt").write_text("".join(f"action_{i}\n" for i in range(101)))
    model_args = ["--config", "ucf101", "--xception", "full", "--stem_pool", "same", "--class_num", "101"]
    results = []
    for weights in (ckpt, converted):
        capsys.readouterr()
        args = ["predict", str(video), "--checkpoint", str(weights), "--classes", str(tmp_path / "names.txt")]
        assert main([*args, "--json", *model_args]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"])
    assert results[0] == results[1]
    assert len(results[0]) == 5 and all(t["class"] == f"action_{t['index']}" for t in results[0])
    cfg = load_config("ucf101", model_args[2:])
    assert (cfg.depth, cfg.T, cfg.N, cfg.target_size) == (50, 7, 5, 112)


def test_int8_export_is_calibrated_checked_and_predicts_like_fp32(
    exported, checkpoint, dataset, tmp_path, capsys
):
    out = tmp_path / "int8.onnx"
    # no --calibration: the checkpoint's own dataset_path (the test dataset) is used
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert "(onnx int8," in text and "of 12 calibration clips (train split)" in text
    runner = load_exported(out)
    assert runner.info.precision == "int8" and runner.backend.endswith(" int8")
    assert runner.info.class_names == CLASSES
    graph = onnx.load(str(out)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    # 7-bit weights (no int16 saturation on CPUs without VNNI); the classifier, the logits, stays fp32
    int8_type = onnx.TensorProto.INT8
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == int8_type}
    assert weights and all(np.abs(w.astype(int)).max() <= 64 for w in weights.values())
    classifier = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    fp32_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert classifier.input[1] in fp32_weights
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and classifier.output[0] in n.input]
    assert out.stat().st_size < 0.4 * (exported / "model.onnx").stat().st_size  # int8 weights
    fp32 = run_infer(load_exported(exported / "model.onnx"), dataset, out_dir=tmp_path / "a", workers=0)
    int8 = run_infer(runner, dataset, out_dir=tmp_path / "b", workers=0)
    assert int8.result.num_videos == fp32.result.num_videos == 9
    np.testing.assert_array_equal(int8.result.predictions, fp32.result.predictions)
    assert int8.result.top1 == fp32.result.top1


def test_int8_export_refuses_other_formats_and_a_failed_check_writes_nothing(
    checkpoint, dataset, tmp_path, capsys, monkeypatch
):
    base = ["export", "--checkpoint", str(checkpoint), "--quantize", "int8", "--calibration", str(dataset)]
    assert main([*base, "--out", str(tmp_path / "m.pt2")]) == 1
    assert "int8 quantization is for ONNX exports, not pt2" in capsys.readouterr().err

    # a quantized model that ranks the classes backwards: its top-1 never agrees with fp32
    real = export_mod.runner_from_bytes

    def reversed_int8(data, fmt, threads=None, choice=None):
        runner = real(data, fmt, threads, choice)
        if runner.info.precision != "int8":
            return runner
        return dataclasses.replace(runner, run=lambda clips, run=runner.run: -run(clips))

    monkeypatch.setattr(export_mod, "runner_from_bytes", reversed_int8)
    assert main([*base, "--out", str(tmp_path / "m.onnx"), "--min_agreement", "0.5"]) == 1
    assert (
        "int8 check failed: the quantized model predicts the fp32 model's class on" in capsys.readouterr().err
    )
    assert not list(tmp_path.iterdir())
