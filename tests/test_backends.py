"""``--backend auto|onnxruntime|openvino|torch``: what auto picks on which machine, each backend giving
ONNX Runtime's scores on the same clips, and `stnet infer`/`stnet predict` end to end on OpenVINO."""

import json
import sys

import numpy as np
import pytest
import torch

from stnet import StNet
from stnet.cli import main
from stnet.config import load_config
from stnet.export import export_model, quantize_int8
from stnet.inference import open_model
from stnet.metrics import softmax
from stnet.runners import (
    BackendChoice,
    BackendError,
    Host,
    ModelInfo,
    choose_backend,
    cpu_flags,
    load_exported,
    runner_from_bytes,
)
from videos import write_colour_dataset

CLASSES = ["red", "green", "blue"]
EPYC = frozenset({"avx2", "avx512f", "avx512_bf16"})
XEON = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
OLD = frozenset({"avx2", "fma"})
TRT, CUDA = "TensorrtExecutionProvider", "CUDAExecutionProvider"


# ----------------------------------------------------------------------------------------------------
# auto's choice, on machines described by their CPU flags and what is installed
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "backend", "precision", "why"),
    [
        (Host("x86_64", XEON, True), "openvino", "bf16", "the CPU has AMX, so bf16"),
        (Host("x86_64", EPYC, True), "openvino", "bf16", "the CPU has AVX-512 BF16, so bf16"),
        (Host("x86_64", OLD, True), "onnxruntime", "fp32", "OpenVINO fp32 is not faster than ONNX"),
        (Host("x86_64", frozenset(), True, ("FP32", "BF16")), "openvino", "bf16", "OpenVINO reports BF16"),
        (Host("x86_64", XEON, False), "onnxruntime", "fp32", "pip install stnet[openvino]"),
        (Host("aarch64", frozenset({"asimd"}), True), "onnxruntime", "fp32", "this is aarch64"),
        (
            Host("x86_64", XEON, True, gpu_providers=(TRT, CUDA)),
            "onnxruntime",
            "fp32",
            "GPU is present (Tensorrt",
        ),
    ],
)
def test_auto_picks_the_fastest_backend_for_the_machine(host, backend, precision, why):
    choice = choose_backend("auto", "onnx", host)
    assert (choice.backend, choice.precision) == (backend, precision)
    assert why in choice.reason
    if host.gpu_providers:
        assert choice.providers == (TRT, CUDA)


def test_explicit_backends_and_the_formats_they_run():
    ov = Host("x86_64", EPYC, True)
    assert choose_backend("onnxruntime", "onnx", ov).backend == "onnxruntime"
    assert choose_backend("openvino", "onnx", Host("x86_64", OLD, True)).precision == "fp32"
    for fmt in ("pt2", "torchscript", "checkpoint"):
        assert choose_backend("auto", fmt, ov).backend == "torch"
        assert choose_backend("torch", fmt, ov).backend == "torch"
        with pytest.raises(BackendError, match="runs in PyTorch"):
            choose_backend("openvino", fmt, ov)
    with pytest.raises(BackendError, match=r"an \.onnx model runs with --backend onnxruntime or openvino"):
        choose_backend("torch", "onnx", ov)
    with pytest.raises(BackendError, match=r"not installed: pip install stnet\[openvino\]"):
        choose_backend("openvino", "onnx", Host("x86_64", EPYC, False))


def test_cpu_flags_are_read_from_cpuinfo():
    text = (
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nflags\t: other\n"
    )
    assert cpu_flags(text) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags("processor: 0\n") == frozenset()


# ----------------------------------------------------------------------------------------------------
# Every backend gives ONNX Runtime's scores on the same clips
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny StNet exported to ONNX fp32 and int8 (QDQ, as --quantize int8 writes)."""
    out = tmp_path_factory.mktemp("backends")
    settings = {"depth": 18, "class_num": 3, "T": 2, "N": 2, "target_size": 32, "short_size": 36}
    cfg = load_config(None, {**settings, "dataset_type": "kinetics400"}, warn=False)
    torch.manual_seed(0)
    model = StNet(3, cfg.T, cfg.N, cfg.depth).eval()
    for m in model.modules():  # trained-like BatchNorm statistics keep the logits small
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            m.running_var.fill_(4.0)
    info = ModelInfo.from_config(cfg, CLASSES)
    export_model(model, info, out / "m.onnx", tolerance=1e-3)
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randn(1, 2, 6, 32, 32, generator=g).numpy() for _ in range(4)]
    (out / "m_int8.onnx").write_bytes(quantize_int8((out / "m.onnx").read_bytes(), calibration))
    return out


def _clips(seed: int = 2) -> np.ndarray:
    return torch.randn(3, 2, 6, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()


def test_openvino_gives_onnxruntime_scores(models):
    x = _clips()
    reference = load_exported(models / "m.onnx", backend="onnxruntime")(x)
    openvino = load_exported(models / "m.onnx", backend="openvino")
    assert openvino.backend.startswith("openvino ") and openvino.info.class_names == CLASSES
    np.testing.assert_allclose(openvino(x), reference, atol=1e-4, rtol=1e-4)
    # bf16 where the CPU computes it (fp32 elsewhere; the backend line says which ran): same classes
    bf16 = BackendChoice("openvino", "asked for", "bf16")
    half = runner_from_bytes((models / "m.onnx").read_bytes(), "onnx", None, bf16)
    got = half(x)
    assert half.backend.endswith((" bf16", " fp32"))
    np.testing.assert_allclose(softmax(got), softmax(reference), atol=0.05)


def test_openvino_runs_the_int8_qdq_model_like_onnxruntime(models):
    x = _clips(3)
    ort = load_exported(models / "m_int8.onnx", backend="onnxruntime")
    ov = load_exported(models / "m_int8.onnx", backend="openvino")
    assert ov.info.precision == "int8" and ov.backend.endswith(" int8")
    a, b = ort(x), ov(x)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    np.testing.assert_allclose(softmax(a), softmax(b), atol=0.02)


def test_a_checkpoint_runs_only_in_torch(tmp_path):
    with pytest.raises(BackendError, match="a checkpoint runs in PyTorch"):
        open_model(None, str(tmp_path / "any.pt"), backend="onnxruntime")


# ----------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_colour_dataset(tmp_path_factory.mktemp("colours"), CLASSES, {"val": 1})


def test_infer_and_predict_on_openvino_match_onnxruntime(models, dataset, tmp_path, capsys):
    results = {}
    for backend in ("onnxruntime", "openvino"):
        args = ["--model", str(models / "m.onnx"), "--backend", backend, "--json"]
        infer = [
            "infer",
            *args,
            "--dataset_path",
            str(dataset),
            "--workers",
            "0",
            "--out",
            str(tmp_path / backend),
        ]
        assert main(infer) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.out)
        assert summary["backend"].startswith(backend) and f"stnet: backend {backend}" in captured.err
        assert main(["predict", str(dataset / "videos"), *args]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(lines) == 3
        results[backend] = (summary, lines)
    (ort, ort_lines), (ov, ov_lines) = results["onnxruntime"], results["openvino"]
    assert ov["top1"] == ort["top1"] and ov["num_videos"] == ort["num_videos"] == 3
    for a, b in zip(ort_lines, ov_lines, strict=True):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-4)


def test_auto_says_what_it_chose_and_why(models, dataset, capsys):
    video = next((dataset / "videos").rglob("*.mp4"))
    assert main(["predict", str(video), "--model", str(models / "m.onnx")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("stnet: backend ") and "(" in err and err.count("\n") == 1


def test_openvino_not_installed_is_one_line_naming_the_extra(models, dataset, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    video = next((dataset / "videos").rglob("*.mp4"))
    base = ["predict", str(video), "--model", str(models / "m.onnx")]
    assert main([*base, "--backend", "openvino"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stnet: error: --backend openvino needs OpenVINO")
    assert err.endswith("which is not installed: pip install stnet[openvino]\n")
    assert main(base) == 0  # auto: ONNX Runtime, and it says why
    err = capsys.readouterr().err
    assert "stnet: backend onnxruntime" in err and "OpenVINO is not installed" in err
