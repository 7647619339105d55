"""Backends for exported models (`stnet infer/predict --backend`): accuracy of every backend and
precision on the demo model's val videos, int8 quantization settings compared on them, and the clips/s
of the default deployment path before (ONNX Runtime fp32) and after (`--backend auto`), measured
interleaved.

    stnet demo --quick --out /tmp/demo                               # the model and its val videos
    .venv/bin/python benchmarks/backends.py accuracy /tmp/demo       # the accuracy table
    .venv/bin/python benchmarks/backends.py int8 /tmp/demo           # quantize_int8 settings
    .venv/bin/python benchmarks/backends.py speed --repeats 5        # StNet-R50, 112 px, batch 8

`--checkpoint FILE` (accuracy, int8) measures another checkpoint of the demo's model than
run/checkpoints/best.pt, e.g. a less-trained one (a tolerant, well-separated model hides quantization
error).

Both print markdown (docs/benchmarks.md has the results).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stnet.checkpoint import checkpoint_config, model_for_checkpoint
from stnet.cli import main
from stnet.config import load_config
from stnet.datasets import build_dataset
from stnet.export import calibration_clips, export_bytes, export_model, quantize_int8
from stnet.inference import checkpoint_runner, run_infer
from stnet.model import StNet
from stnet.runners import (
    BackendChoice,
    ModelInfo,
    Runner,
    choose_backend,
    class_names_for,
    load_exported,
    runner_from_bytes,
)


def _runner(path: Path, backend: str, precision: str = "fp32") -> Runner:
    return runner_from_bytes(path.read_bytes(), "onnx", None, BackendChoice(backend, "benchmark", precision))


def accuracy(demo: Path, checkpoint: Path, batch: int) -> None:
    """Top-1 on the demo's val split for PyTorch fp32 (the checkpoint) and every backend/precision of
    its export; how many videos' top-1 class differs from PyTorch fp32's."""
    data = demo / "data"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(fp32)]) == 0
        quantize = ["--quantize", "int8", "--calibration", str(data)]
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(int8), *quantize]) == 0
        runners = {
            "PyTorch fp32 (the checkpoint)": checkpoint_runner(
                checkpoint, checkpoint_config(checkpoint, None, [])
            ),
            "ONNX Runtime fp32": _runner(fp32, "onnxruntime"),
            "OpenVINO fp32": _runner(fp32, "openvino"),
            "OpenVINO bf16": _runner(fp32, "openvino", "bf16"),
            "ONNX Runtime int8": _runner(int8, "onnxruntime"),
            "OpenVINO int8": _runner(int8, "openvino"),
        }
        rows, reference = [], None
        for i, (name, runner) in enumerate(runners.items()):
            report = run_infer(runner, data, batch_size=batch, workers=1, out_dir=folder / str(i))
            result = report.result
            if reference is None:
                reference = result.predictions
            differ = int((np.asarray(result.predictions) != np.asarray(reference)).sum())
            rows.append(
                f"| {name} | {runner.backend} | {result.topk_correct(1)}/{result.num_videos} "
                f"| {100 * result.top1:.2f} % | {differ} | {report.latency.clips_per_s:.0f} |"
            )
            print(f"{name}: {rows[-1]}", file=sys.stderr)
    print(f"`{' '.join(sys.argv)}` on the val split of {data}, batch {batch}:\n")
    print("| backend | ran as | top-1 correct | top-1 | videos whose top-1 ≠ PyTorch fp32 | clips/s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


# (name, quantize_int8 keywords, calibration clips, their sampling): "train" as `stnet export` takes
# them (the train split's augmentation), "eval" the same videos' centre clips
INT8_VARIANTS: list[tuple[str, dict, int, str]] = [
    ("8-bit weights, all int8 (the default before)", {"reduce_range": False, "exclude": ()}, 32, "train"),
    ("7-bit weights (reduce_range)", {"exclude": ()}, 32, "train"),
    ("8-bit weights, classifier fp32", {"reduce_range": False}, 32, "train"),
    ("**7-bit weights, classifier fp32 (the default)**", {}, 32, "train"),
    ("default, 64 clips", {}, 64, "train"),
    ("default, 128 clips", {}, 128, "train"),
    ("default, eval sampling of the clips", {}, 32, "eval"),
    ("default, first conv fp32 too", {"exclude": ("fc", "first_conv")}, 32, "train"),
    ("default, Percentile calibration", {"method": "percentile"}, 32, "train"),
    ("default, Entropy calibration", {"method": "entropy"}, 32, "train"),
    ("default, symmetric int8 activations", {"symmetric_activations": True}, 32, "train"),
    ("default, CalibMovingAverage", {"extra_options": {"CalibMovingAverage": True}}, 32, "train"),
]


def int8(demo: Path, checkpoint: Path) -> None:
    """Each of INT8_VARIANTS on the demo's val videos (one centre clip each, as `stnet infer`): how
    many videos' top-1 differs from PyTorch fp32's in ONNX Runtime, in ONNX Runtime with graph
    optimisations off (the QDQ graph run in fp32: the quantization error alone, no int8 kernels) and in
    OpenVINO, and the mean |logit - fp32 logit| over those clips."""
    import onnxruntime as ort

    data = demo / "data"
    cfg = checkpoint_config(checkpoint, None, [])
    model, cfg, classes = model_for_checkpoint(checkpoint, cfg)
    model = model.float().eval()
    info = ModelInfo.from_config(cfg, class_names_for(cfg, classes, None))
    val = build_dataset(info.config(dataset_path=str(data)), "val", augment=False)
    x = np.stack([val[i][0].numpy() for i in range(len(val))])
    labels = np.array([val.label_of(i) for i in range(len(val))])

    def batched(run, a: np.ndarray) -> np.ndarray:
        return np.concatenate([run(a[i : i + 8]) for i in range(0, len(a), 8)])

    with torch.no_grad():
        ref = batched(lambda b: model(torch.from_numpy(b)).numpy(), x)
    top = np.sort(ref, 1)
    margins = top[:, -1] - top[:, -2]
    fp32 = export_bytes(model, info, "onnx")

    def unfused(q: bytes):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(q, options, providers=["CPUExecutionProvider"])
        return lambda b: session.run(None, {session.get_inputs()[0].name: b})[0]

    rows = []
    for name, kwargs, count, sampling in INT8_VARIANTS:
        augment = None if sampling == "train" else False  # eval: the same videos' centre clips
        q = quantize_int8(fp32, calibration_clips(info, data, "train", count, augment), **kwargs)
        cells = []
        for run in (
            runner_from_bytes(q, "onnx"),
            unfused(q),
            runner_from_bytes(q, "onnx", choice=BackendChoice("openvino", "benchmark")),
        ):
            got = batched(run, x)
            differ = np.flatnonzero(got.argmax(1) != ref.argmax(1))
            cells.append(f"{len(differ)}{' (' + ', '.join(map(str, differ)) + ')' if len(differ) else ''}")
            cells.append(f"{np.abs(got - ref).mean():.3f}")
        rows.append(f"| {name} | {count} {sampling} | " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr)
    low = ", ".join(f"{i}: {margins[i]:.3f}" for i in np.argsort(margins)[:4])
    correct = int((ref.argmax(1) == labels).sum())
    print(
        f"`{' '.join(sys.argv)}`: {checkpoint}, PyTorch fp32 {correct}/{len(x)} val videos correct; "
        f"smallest top-1 − top-2 logit margins (video: margin) {low}. Per setting: val videos whose top-1 ≠ "
        "PyTorch fp32 (their indices), and the mean |logit − fp32 logit| over them:\n"
    )
    print(
        "| quantize_int8 setting | calibration clips | ONNX Runtime | error | ORT unfused (no int8 kernels) "
        "| error | OpenVINO | error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def speed(size: int, batch: int, repeats: int, calls: int) -> None:
    """clips/s of ONNX Runtime fp32 (the default before --backend) and of what --backend auto picks,
    and their int8 models, on StNet-R50 (T=7, N=5, 101 classes): repeats interleaved, medians."""
    cfg = load_config(None, {"depth": 50, "class_num": 101, "T": 7, "N": 5, "target_size": size}, warn=False)
    info = ModelInfo.from_config(cfg, [str(i) for i in range(101)])
    torch.manual_seed(0)
    model = StNet(101, 7, 5, 50).eval()
    choice = choose_backend("auto", "onnx")
    print(f"--backend auto here: {choice.backend} {choice.precision} ({choice.reason})", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_model(model, info, fp32, tolerance=1e-2)  # untrained: logits in the hundreds
        g = torch.Generator().manual_seed(1)
        calibration = [torch.randn(1, 7, 15, size, size, generator=g).numpy() for _ in range(4)]
        int8.write_bytes(quantize_int8(fp32.read_bytes(), calibration))
        runners = {
            "before: ONNX Runtime fp32": load_exported(fp32, backend="onnxruntime"),
            "after: --backend auto": load_exported(fp32, backend="auto"),
            "ONNX Runtime int8": load_exported(int8, backend="onnxruntime"),
        }
        if choice.backend == "openvino":
            runners["OpenVINO int8 (auto on the int8 file)"] = load_exported(int8, backend="auto")
        x = torch.randn(batch, 7, 15, size, size, generator=g).numpy()
        for runner in runners.values():
            runner(x)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(repeats):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    runners[name](x)
                    times.append(time.perf_counter() - start)
                rates[name].append(batch / statistics.median(times))
            print(
                f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in rates.items()), file=sys.stderr
            )
    before = rates["before: ONNX Runtime fp32"]
    print(
        f"`{' '.join(sys.argv)}`: StNet-R50, 7×15×{size}², batch {batch}, {repeats} interleaved repeats of "
        f"{calls} calls (median call per repeat, then the median over repeats):\n"
    )
    print("| path | runs as | clips/s (median) | per-repeat range | ÷ ONNX Runtime fp32 (median ratio) |")
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, before, strict=True))
        print(
            f"| {name} | {runners[name].backend} | {statistics.median(values):.2f} | "
            f"{min(values):.2f}–{max(values):.2f} | {ratio:.2f}× |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("demo", type=Path, help="the --out folder of `stnet demo --quick`")
    a.add_argument("--checkpoint", type=Path, help="default: DEMO/run/checkpoints/best.pt")
    a.add_argument("--batch", type=int, default=8)
    q = sub.add_parser("int8")
    q.add_argument("demo", type=Path, help="the --out folder of `stnet demo --quick`")
    q.add_argument("--checkpoint", type=Path, help="default: DEMO/run/checkpoints/best.pt")
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=112)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    if args.what in ("accuracy", "int8") and args.checkpoint is None:
        args.checkpoint = args.demo / "run" / "checkpoints" / "best.pt"
    if args.what == "accuracy":
        accuracy(args.demo, args.checkpoint, args.batch)
    elif args.what == "int8":
        int8(args.demo, args.checkpoint)
    else:
        speed(args.size, args.batch, args.repeats, args.calls)
