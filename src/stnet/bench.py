"""``stnet bench``: how fast this machine trains and runs StNet, and how close that is to its limit.

One run measures, on the same machine and in the same session (so ratios are stable even when absolute
numbers move with load):

1. the ceiling: dense matmul GFLOP/s in fp32 and bf16;
2. StNet training clips/s, achieved GFLOP/s (FLOPs counted from the model) and peak memory per variant
   (fp32 eager; the default training path, bf16 autocast + channels-last where bf16 is native, else
   fp32 + channels-last; torch.compile of it);
3. StNet inference clips/s and latency, the same variants plus ONNX Runtime (fp32, int8) and, where
   installed, OpenVINO (fp32, bf16 where the CPU has it, int8) on the file ``stnet export`` writes;
4. the baseline a TSN user runs: a plain ResNet (3-channel frames, logits averaged over T), fp32 eager;
5. the data pipeline: clip-store load + augment clips/s in one worker, and the fraction of a real
   ``stnet train`` epoch spent waiting for data;
6. how inference cost grows with T and with the input size (fitted exponents);

and then checks the targets, which are all ratios within the run; the training targets are checked for
the default training path, the inference targets for the best PyTorch path and for the default
deployment path (what ``--backend auto`` runs here).

FLOPs are those of convolutions and matrix products (2 per multiply-add), counted by
``torch.utils.flop_counter`` on the model itself: a training step counts forward and backward.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stnet.errors import StnetError
from stnet.model import FrozenCompiled, StNet, to_channels_last
from stnet.runtime import autocast, autocast_dtype, log_stderr

# ----------------------------------------------------------------------------------------------------
# What a run measures
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The sizes and repeats of one bench run."""

    depth: int
    classes: int
    T: int
    N: int
    train_cases: tuple[tuple[int, int], ...]  # (size, batch)
    infer_sizes: tuple[int, ...]
    infer_batches: tuple[int, ...]
    warmup: int
    steps: int  # timed training steps per variant
    calls: int  # timed inference calls per variant
    matmul_sizes: tuple[int, ...]
    matmul_seconds: float
    compile: bool
    scale_T: tuple[int, ...]
    scale_sizes: tuple[int, ...]
    scale_batch: int
    data_videos: int  # videos in the store for the data measurements
    data_frames: int
    data_size: int  # training crop for the data measurements (store short side: 8/7 of it)
    data_batch: int


FULL_WORKLOAD = Workload(
    depth=50,
    classes=101,
    T=7,
    N=5,
    train_cases=((112, 8), (224, 2)),
    infer_sizes=(112, 224),
    infer_batches=(1, 8),
    warmup=2,
    steps=3,
    calls=5,
    matmul_sizes=(1024, 2048, 4096),
    matmul_seconds=1.0,
    compile=True,
    scale_T=(4, 7, 14, 25),
    scale_sizes=(112, 160, 224, 256),
    scale_batch=4,
    data_videos=128,
    data_frames=60,
    data_size=112,
    data_batch=16,
)
QUICK_WORKLOAD = Workload(
    depth=18,
    classes=10,
    T=3,
    N=2,
    train_cases=((48, 2),),
    infer_sizes=(48,),
    infer_batches=(1, 2),
    warmup=1,
    steps=1,
    calls=2,
    matmul_sizes=(256,),
    matmul_seconds=0.05,
    compile=False,
    scale_T=(2, 4),
    scale_sizes=(32, 64),
    scale_batch=1,
    data_videos=8,
    data_frames=24,
    data_size=48,
    data_batch=4,
)


class BenchError(StnetError, ValueError):
    """A bench run asked for something that does not exist."""


FP32, FAST, FP32_CL = "fp32", "bf16 + channels_last", "fp32 + channels_last"
ONNX = "ONNX Runtime fp32"
ONNX_INT8 = "ONNX Runtime int8"  # int8 operations: not comparable with the bf16/fp32 FLOP ceiling
OPENVINO = {"fp32": "OpenVINO fp32", "bf16": "OpenVINO bf16", "int8": "OpenVINO int8"}  # where installed


def is_int8(variant: str) -> bool:
    return variant.endswith(" int8")


def deployment_variant(host: Any = None) -> tuple[str, str]:
    """The inference variant ``stnet infer``/``stnet predict`` run by default here (``--backend auto``
    on an .onnx export), and why: an OpenVINO or ONNX Runtime fp32 row of the inference table."""
    from stnet.runners import choose_backend

    choice = choose_backend("auto", "onnx", host)
    if choice.backend == "openvino":
        return OPENVINO[choice.precision], choice.reason
    return ONNX, choice.reason


def training_variant(device: torch.device) -> str:
    """The training variant ``stnet train`` runs by default here (``precision: auto`` and channels-last):
    bf16 autocast where the hardware computes bf16 natively, fp32 otherwise."""
    return FAST if fast_dtype(device) is not None else FP32_CL


def compiled(variant: str) -> str:
    return f"torch.compile {variant}"


# ----------------------------------------------------------------------------------------------------
# Models and FLOPs
# ----------------------------------------------------------------------------------------------------


class TSN(nn.Module):
    """The plain-ResNet baseline (MMAction2's tsn_r50): each of T RGB frames through a 2D ResNet, logits
    averaged over T. Input ``(B, T, 3, H, W)``. Same backbone code as StNet, without its temporal parts."""

    def __init__(self, num_classes: int, depth: int = 50):
        super().__init__()
        net = StNet(num_classes, T=1, N=1, depth=depth)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.fc = nn.Linear(net.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        features = self.layers(self.stem(x.flatten(0, 1))).mean(dim=(2, 3))
        return self.fc(features).view(b, t, -1).mean(dim=1)


def build(kind: str, plan: Workload) -> nn.Module:
    if kind == "stnet":
        return StNet(plan.classes, plan.T, plan.N, plan.depth)
    return TSN(plan.classes, plan.depth)


def example(kind: str, plan: Workload, batch: int, size: int, T: int | None = None) -> torch.Tensor:
    channels = 3 * plan.N if kind == "stnet" else 3
    return torch.randn(batch, T or plan.T, channels, size, size)


def _conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: Sequence[bool],
    out_shape: Any = None,
) -> int:
    """A convolution's backward: each of the input and weight gradients costs one forward pass.

    torch's own formula ignores ``groups`` for the weight gradient and so counts a depthwise layer's
    backward hundreds of times over (StNet's Xception head has two)."""
    forward = 2 * x_shape[0] * math.prod(w_shape) * math.prod((x_shape if transposed else grad_out_shape)[2:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(model: nn.Module, x: torch.Tensor, train: bool = False) -> int:
    """Convolution and matmul FLOPs (2 per multiply-add) of one forward pass on ``x``; with ``train``,
    of forward and backward (the input and weight gradients autograd computes)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.train(train)
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter, torch.set_grad_enabled(train):
        out = model(x)
        if train:
            out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def model_name(kind: str, depth: int) -> str:
    return f"StNet-R{depth}" if kind == "stnet" else f"TSN ResNet-{depth}"


# ----------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], calls: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(dtype: torch.dtype, n: int, seconds: float, device: torch.device) -> float:
    """Best GFLOP/s of ``n×n @ n×n`` in ``dtype`` over calls for about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (and the kernel choice)
    best, spent = math.inf, 0.0
    while spent < seconds or best == math.inf:
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n**3 / best / 1e9


def matmul_ceiling(
    dtype: torch.dtype, sizes: Sequence[int], seconds: float, device: torch.device
) -> tuple[float, int]:
    """The best :func:`matmul_gflops` over ``sizes`` (ascending) and its size. A size whose one call takes
    longer than ``seconds`` is the last: the next is 8x the work (a CPU without native bf16 emulates it at
    well under 1 GFLOP/s, where a 4096² product would take minutes)."""
    rates: dict[int, float] = {}
    for n in sizes:
        rates[n] = matmul_gflops(dtype, n, seconds, device)
        if 2 * n**3 / rates[n] / 1e9 > seconds:
            break
    best = max(rates, key=rates.__getitem__)
    return rates[best], best


def gflops_text(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}"


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision: auto`` here (None: fp32 is the fast path)."""
    return autocast_dtype("auto", device)


def prepare_variant(
    model: nn.Module, variant: str, device: torch.device
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.dtype | None]:
    """The model to call (``model`` itself, on ``device``, or compiled) and its autocast dtype for a
    variant name."""
    model = model.to(device)
    dtype = None
    if FAST in variant:
        dtype = fast_dtype(device) or torch.bfloat16
    if "channels_last" in variant:
        to_channels_last(model)
    if variant.startswith("torch.compile"):
        # One static graph per case (each measured shape compiles once). Inference freezes the weights
        # (BatchNorm folded, oneDNN pre-packing), as `stnet eval --compile` does.
        if model.training:
            return torch.compile(model, dynamic=False), dtype
        return FrozenCompiled(model), dtype
    return model, dtype


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ----------------------------------------------------------------------------------------------------
# Training and inference cases
# ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One measured configuration."""

    section: str  # "train" or "infer"
    model: str
    variant: str
    size: int
    batch: int
    T: int
    clips_per_s: float
    ms_per_clip: float
    p99_ms_per_clip: float
    gflop_per_clip: float
    gflops: float  # achieved
    peak_gib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train_case(kind: str, plan: Workload, variant: str, size: int, batch: int, device_name: str) -> dict:
    """Time SGD steps of one configuration; run in a fresh process so its peak memory is its own."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build(kind, plan)
    flops = count_flops(model, example(kind, plan, 1, size), train=True)
    net, dtype = prepare_variant(model.train(), variant, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x = example(kind, plan, batch, size).to(device)
    if dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, plan.classes, (batch,), device=device)

    def step() -> None:
        with autocast(device, dtype):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = time_calls(step, plan.steps, plan.warmup, device)
    return asdict(
        _case("train", kind, plan, variant, size, batch, plan.T, times, flops, peak_memory_gib(device))
    )


def _case(
    section: str,
    kind: str,
    plan: Workload,
    variant: str,
    size: int,
    batch: int,
    T: int,
    times: list[float],
    flops_per_clip: int,
    peak: float | None = None,
) -> Case:
    per_call = statistics.median(times)
    return Case(
        section=section,
        model=model_name(kind, plan.depth),
        variant=variant,
        size=size,
        batch=batch,
        T=T,
        clips_per_s=batch / per_call,
        ms_per_clip=1000 * per_call / batch,
        p99_ms_per_clip=1000 * float(np.percentile(times, 99)) / batch,
        gflop_per_clip=flops_per_clip / 1e9,
        gflops=flops_per_clip * batch / per_call / 1e9,
        peak_gib=peak,
    )


def run_train_cases(
    plan: Workload, variants: Sequence[str], device: torch.device, say: Callable[[str], None]
) -> list[Case]:
    cases = []
    jobs = [("stnet", v) for v in variants] + [("tsn", FP32)]
    for size, batch in plan.train_cases:
        for kind, variant in jobs:
            # A fresh process per configuration: its peak memory is its own, and compiled code and
            # allocator caches from one case do not help or hurt the next.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
                job = pool.submit(train_case, kind, plan, variant, size, batch, str(device))
                case = Case(**job.result())
            cases.append(case)
            say(
                f"  train {case.model} {variant} {size}px batch {batch}: {case.clips_per_s:.2f} clips/s, "
                f"{case.gflops:.0f} GFLOP/s, peak {case.peak_gib:.2f} GiB"
            )
    return cases


def _torch_infer(
    model: nn.Module, x: torch.Tensor, variant: str, device: torch.device
) -> Callable[[], object]:
    net, dtype = prepare_variant(model.eval(), variant, device)
    x = x.to(device)
    if dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def run() -> object:
        with autocast(device, dtype):
            return net(x)

    return run


def _onnx_runners(
    model: nn.Module, plan: Workload, size: int, folder: Path
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The model written by ``stnet export``'s code, fp32 and quantized as ``--quantize int8`` does,
    loaded into ONNX Runtime, and into OpenVINO (fp32, bf16, int8) where it is installed; bf16 only
    where the CPU computes it (OpenVINO falls back to fp32 elsewhere: the row would repeat fp32). The
    int8 model is calibrated on random clips and its agreement with fp32 is not checked: an untrained
    model's classes mean nothing; this measures speed only."""
    from stnet.config import load_config
    from stnet.export import export_model, quantize_int8
    from stnet.runners import BackendChoice, ModelInfo, load_exported, runner_from_bytes

    cfg = load_config(
        None,
        {"depth": plan.depth, "class_num": plan.classes, "T": plan.T, "N": plan.N}
        | {"target_size": size, "short_size": size},
        warn=False,
    )
    info = ModelInfo.from_config(cfg, [str(i) for i in range(plan.classes)])
    fp32, int8 = folder / f"stnet_{size}.onnx", folder / f"stnet_{size}_int8.onnx"
    # An untrained ResNet's logits reach hundreds (its BN statistics are still 0/1), so fp32 rounding
    # alone exceeds the 1e-4 absolute tolerance meant for trained models.
    export_model(model, info, fp32, tolerance=1e-2)
    calibration = [example("stnet", plan, 1, size).numpy() for _ in range(4)]
    int8.write_bytes(quantize_int8(fp32.read_bytes(), calibration))
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        ONNX: load_exported(fp32, backend="onnxruntime"),
        ONNX_INT8: load_exported(int8, backend="onnxruntime"),
    }
    with contextlib.suppress(ImportError):
        import openvino  # noqa: F401

        for precision, path in (("fp32", fp32), ("bf16", fp32), ("int8", int8)):
            choice = BackendChoice("openvino", "bench", "bf16" if precision == "bf16" else "fp32")
            runner = runner_from_bytes(path.read_bytes(), "onnx", None, choice)
            if runner.backend.endswith(f" {precision}"):  # bf16 ran as bf16, not fallen back to fp32
                runners[OPENVINO[precision]] = runner
    return runners


def run_infer_cases(
    plan: Workload, variants: Sequence[str], device: torch.device, say: Callable[[str], None]
) -> list[Case]:
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in plan.infer_sizes:
            stnet = build("stnet", plan).eval()
            flops = {
                kind: count_flops(build(kind, plan), example(kind, plan, 1, size))
                for kind in ("stnet", "tsn")
            }
            runners = _onnx_runners(stnet, plan, size, Path(tmp))
            for batch in plan.infer_batches:
                x = example("stnet", plan, batch, size)
                jobs: list[tuple[str, str, Callable[[], object]]] = [
                    ("stnet", v, _torch_infer(build("stnet", plan), x, v, device)) for v in variants
                ]
                jobs += [("stnet", name, functools.partial(run, x.numpy())) for name, run in runners.items()]
                tsn_x = example("tsn", plan, batch, size)
                jobs.append(("tsn", FP32, _torch_infer(build("tsn", plan), tsn_x, FP32, device)))
                for kind, variant, fn in jobs:
                    warmup = plan.warmup + (1 if variant.startswith("torch.compile") else 0)
                    times = time_calls(fn, plan.calls, warmup, device)
                    case = _case("infer", kind, plan, variant, size, batch, plan.T, times, flops[kind])
                    cases.append(case)
                    say(
                        f"  infer {case.model} {variant} {size}px batch {batch}: "
                        f"{case.clips_per_s:.2f} clips/s, {case.ms_per_clip:.1f} ms/clip"
                    )
    return cases


# ----------------------------------------------------------------------------------------------------
# Scaling with T and input size
# ----------------------------------------------------------------------------------------------------


def fitted_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """``k`` of the least-squares fit ``y ∝ x^k`` (a line in log-log)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_scaling(plan: Workload, device: torch.device, say: Callable[[str], None]) -> dict[str, Any]:
    """Inference ms per clip (the default fast variant) vs T at the first size, and vs size at plan.T."""
    variant = FAST if fast_dtype(device) is not None else FP32
    model = build("stnet", plan).eval()
    base_size = plan.scale_sizes[0]
    rows = []
    points = [(T, base_size) for T in plan.scale_T] + [(plan.T, s) for s in plan.scale_sizes]
    for T, size in points:
        x = example("stnet", plan, plan.scale_batch, size, T=T)
        times = time_calls(_torch_infer(model, x, variant, device), plan.calls, plan.warmup, device)
        ms = 1000 * statistics.median(times) / plan.scale_batch
        rows.append({"T": T, "size": size, "ms_per_clip": ms})
        say(f"  scaling T={T} {size}px: {ms:.1f} ms/clip")
    by_T = rows[: len(plan.scale_T)]
    by_size = rows[len(plan.scale_T) :]
    return {
        "variant": variant,
        "batch": plan.scale_batch,
        "by_T": by_T,
        "by_size": by_size,
        "exponent_T": fitted_exponent([r["T"] for r in by_T], [r["ms_per_clip"] for r in by_T]),
        "exponent_pixels": fitted_exponent(
            [r["size"] ** 2 for r in by_size], [r["ms_per_clip"] for r in by_size]
        ),
    }


# ----------------------------------------------------------------------------------------------------
# Data: one worker's rate and a real training epoch's wait
# ----------------------------------------------------------------------------------------------------


def video_like_frames(count: int, width: int = 320, height: int = 240, seed: int = 0) -> list[np.ndarray]:
    """Frames with realistic JPEG/H.264 sizes: smooth gradients, a moving disc and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width * 200, yy / height * 200, (xx + yy) / (width + height) * 255], axis=-1)
    frames = []
    for i in range(count):
        cx, cy = (40 + 5 * i) % width, height / 2 + 60 * np.sin(i / 10)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 30**2)[..., None] * np.array([200.0, -80.0, -80.0])
        noise = rng.normal(0, 6, (height, width, 1))
        frames.append(np.clip(base + disc + noise, 0, 255).astype(np.uint8))
    return frames


def make_store(plan: Workload, root: Path) -> Path:
    """A prepared dataset of ``plan.data_videos`` 320×240 MPEG-4 videos in 4 classes (UCF101-like)."""
    from stnet.encode import encode_video
    from stnet.prepare import Settings, execute, plan_list

    frames = video_like_frames(plan.data_frames)
    src = root / "videos"
    for i in range(plan.data_videos):
        path = src / "train" / f"class{i % 4}" / f"v{i:04d}.avi"
        encode_video(path, frames[i % 7 :] + frames[: i % 7], codec="mpeg4", bit_rate=1_000_000)
    out = root / "data"
    settings = Settings(short_side=round(plan.data_size * 8 / 7))
    execute(plan_list([], src, folders=True, label_file=None), out, settings, progress=False)  # raises
    return out


def worker_rate(plan: Workload, store: Path, seconds: float = 2.0) -> dict[str, float]:
    """Training clips/s one DataLoader worker (one process, one thread) loads and augments (uint8 clips,
    as :func:`stnet.loader.build_loader` has them)."""
    from stnet.datasets import ClipSpec, Sample, VideoClipDataset

    paths = sorted(store.rglob("*.stclip"))
    spec = ClipSpec("ucf101", plan.T, plan.N, plan.data_size, round(plan.data_size * 8 / 7))
    ds = VideoClipDataset([Sample(p, i % 4) for i, p in enumerate(paths)], spec, "train", seed=0)
    ds = ds.as_uint8()  # what a training loader's worker hands over (normalised on the device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds[0]
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count < 3:
            ds[count % len(ds)]
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {"clips_per_s": count / elapsed, "ms_per_clip": 1000 * elapsed / count}


def epoch_wait(plan: Workload, store: Path, root: Path) -> dict[str, Any]:
    """One real training epoch (:func:`stnet.engine.fit`, as ``stnet train`` runs it) on the store with
    the default workers and precision: its clips/s and the fraction of it spent waiting for data."""
    from stnet.config import load_config
    from stnet.datasets import build_dataset
    from stnet.engine import fit

    short = round(plan.data_size * 8 / 7)
    settings = {"dataset_path": str(store), "output_dir": str(root / "run"), "class_num": 4}
    settings |= {"depth": plan.depth, "T": plan.T, "N": plan.N, "target_size": plan.data_size}
    settings |= {"short_size": short, "batch_size": plan.data_batch, "num_epochs": 1, "run_eval": False}
    cfg = load_config("ucf101", settings, warn=False)
    run = fit(cfg, build_dataset(cfg, "train"), None, [f"class{i}" for i in range(4)], log=_quiet)
    record = run.history[-1]
    return {
        "workers": cfg.workers,
        "clips": plan.data_videos,
        "batch": plan.data_batch,
        "data_wait": record["data_wait"],
        "clips_per_s": record["clips_per_s"],
    }


def _quiet(_message: str) -> None:
    """The training log, which the benchmark does not show."""


def run_data(plan: Workload, say: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = make_store(plan, root)
        rate = worker_rate(plan, store, seconds=2.0 if plan is FULL_WORKLOAD else 0.3)
        say(f"  data: one worker loads {rate['clips_per_s']:.0f} training clips/s")
        epoch = epoch_wait(plan, store, root)
        say(f"  data: a training epoch waited {epoch['data_wait']:.1%} of its time for data")
    return {"worker": rate, "epoch": epoch}


# ----------------------------------------------------------------------------------------------------
# Targets and the report
# ----------------------------------------------------------------------------------------------------


@dataclass
class Target:
    what: str
    measured: float
    goal: str
    met: bool
    shown: str


def _find(
    cases: list[Case], section: str, model_kind: str, size: int, batch: int | None = None
) -> list[Case]:
    return [
        c
        for c in cases
        if c.section == section
        and c.model.startswith("StNet" if model_kind == "stnet" else "TSN")
        and c.size == size
        and (batch is None or c.batch == batch)
    ]


def _at_least(what: str, value: float, minimum: float, share: bool = False) -> Target:
    """A target met when ``value`` ≥ ``minimum``: a ratio (``2.17×``) or a share (``45 %``)."""
    if share:
        return Target(what, value, f"≥ {minimum:.0%}".replace("%", " %"), value >= minimum, f"{value:.0%}")
    return Target(what, value, f"≥ {minimum:g}", value >= minimum, f"{value:.2f}×")


def targets(result: dict[str, Any]) -> list[Target]:
    """The targets, each a ratio of numbers from this run."""
    cases = [Case(**c) for c in result["cases"]]
    ceiling = max(result["ceiling"]["bf16"], result["ceiling"]["fp32"])
    size = result["plan"]["train_cases"][0][0]
    out = []
    stnet_train = _find(cases, "train", "stnet", size)
    tsn_train = _find(cases, "train", "tsn", size)
    default = [c for c in stnet_train if c.variant == result.get("training", {}).get("variant")]
    if default and tsn_train:  # what `stnet train` runs by default here
        c = default[0]
        ratio = c.clips_per_s / tsn_train[0].clips_per_s
        out.append(_at_least(f"StNet training ({c.variant}) ÷ TSN fp32 training, {size} px", ratio, 1.5))
        own = result["ceiling"]["bf16" if FAST in c.variant else "fp32"]
        what = f"StNet training ({c.variant}) GFLOP/s ÷ its precision's matmul ceiling"
        out.append(_at_least(what, c.gflops / own, 0.45, share=True))
    batch = max(result["plan"]["infer_batches"])
    stnet_infer = _find(cases, "infer", "stnet", size, batch)
    tsn_infer = _find(cases, "infer", "tsn", size, batch)
    if stnet_infer and tsn_infer:
        best = max(stnet_infer, key=lambda c: c.clips_per_s)
        ratio = best.clips_per_s / tsn_infer[0].clips_per_s
        out.append(
            _at_least(f"StNet inference ({best.variant}) ÷ TSN fp32, {size} px batch {batch}", ratio, 2)
        )
        floating = max((c for c in stnet_infer if not is_int8(c.variant)), key=lambda c: c.clips_per_s)
        share = floating.gflops / ceiling
        what = f"StNet inference ({floating.variant}) GFLOP/s ÷ matmul ceiling"
        out.append(_at_least(what, share, 0.55, share=True))
        deployed = [c for c in stnet_infer if c.variant == result.get("deployment", {}).get("variant")]
        if deployed:  # what `stnet infer`/`stnet predict` run by default here (--backend auto)
            c = deployed[0]
            ratio = c.clips_per_s / tsn_infer[0].clips_per_s
            what = f"default deployment path ({c.variant}) ÷ TSN fp32, {size} px batch {batch}"
            out.append(_at_least(what, ratio, 2))
            own = result["ceiling"]["bf16" if "bf16" in c.variant else "fp32"]
            what = f"default deployment path ({c.variant}) GFLOP/s ÷ its precision's matmul ceiling"
            out.append(_at_least(what, c.gflops / own, 0.55, share=True))
    if "data" in result:
        wait = result["data"]["epoch"]["data_wait"]
        out.append(
            Target("training epoch time spent waiting for data", wait, "< 5 %", wait < 0.05, f"{wait:.1%}")
        )
    if "scaling" in result:
        for key, what in (("exponent_T", "T"), ("exponent_pixels", "pixels")):
            k = result["scaling"][key]
            out.append(
                Target(
                    f"inference cost ∝ {what}^k", k, "k ≈ 1 (0.85–1.15)", 0.85 <= k <= 1.15, f"k = {k:.2f}"
                )
            )
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    memory = None
    with contextlib.suppress(OSError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "memory_gib": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(v) for v in row) + " |" for row in rows),
    ]


def render(result: dict[str, Any]) -> str:
    """The run as markdown: machine, command, one table per section, the targets."""
    m = result["machine"]
    plan = result["plan"]
    ceiling = max(result["ceiling"]["bf16"], result["ceiling"]["fp32"])
    isa = ", ".join(m["isa"]) or "no AVX-512"
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({isa}), {m['memory_gib'] or 0:.0f} GiB"
        + (f", {m['gpu']}" if "gpu" in m else ", no GPU")
        + f"; Python {m['python']}, torch {m['torch']}, onnxruntime {m.get('onnxruntime', '-')}, "
        + f"openvino {m.get('openvino', '-')}, "
        + f"{m['torch_threads']} torch threads. "
        + f"Command: `{result['command']}` ({result['seconds'] / 60:.1f} min).",
        "",
        "**Ceiling** (best dense matmul):",
        "",
        *_table(
            ["dtype", "GFLOP/s", "size"],
            [
                [k, gflops_text(result["ceiling"][k]), f"{result['ceiling'][k + '_n']}²"]
                for k in ("fp32", "bf16")
            ],
        ),
    ]
    T, N = plan["T"], plan["N"]
    for section, title in (("train", "Training (SGD steps)"), ("infer", "Inference")):
        rows = []
        for c in (Case(**c) for c in result["cases"] if c["section"] == section):
            shape = f"{T}×{3 * N if c.model.startswith('StNet') else 3}×{c.size}²"
            row = [c.model, shape, c.batch, c.variant, f"{c.clips_per_s:.2f}"]
            if section == "infer":
                row += [f"{c.ms_per_clip:.1f}", f"{c.p99_ms_per_clip:.1f}"]
            share = "int8" if is_int8(c.variant) else f"{c.gflops / ceiling:.0%}"
            row += [f"{c.gflop_per_clip:.1f}", f"{c.gflops:.0f}", share]
            if section == "train":
                row.append(f"{c.peak_gib:.2f}")
            rows.append(row)
        if not rows:  # a section not run (--only)
            continue
        header = ["model", "clip", "batch", "variant", "clips/s"]
        header += ["latency/clip p50 (ms)", "p99 (ms)"] if section == "infer" else []
        header += ["GFLOP/clip", "GFLOP/s", "of ceiling"] + (
            ["peak memory (GiB)"] if section == "train" else []
        )
        lines += ["", f"**{title}**:", "", *_table(header, rows)]
    if "data" in result:
        d = result["data"]
        lines += [
            "",
            f"**Data**: one worker (one process, one thread) loads and augments "
            f"{d['worker']['clips_per_s']:.0f} training clips/s from the clip store "
            f"({d['worker']['ms_per_clip']:.1f} ms/clip, {T}×{N} frames at {plan['data_size']} px). "
            f"A real `stnet train` epoch ({d['epoch']['clips']} clips, batch {d['epoch']['batch']}, "
            f"{d['epoch']['workers']} workers, default precision) "
            f"ran at {d['epoch']['clips_per_s']:.1f} clips/s "
            f"and waited for data {d['epoch']['data_wait']:.1%} of the time.",
        ]
    if "scaling" in result:
        s = result["scaling"]
        lines += ["", f"**Scaling** (inference, {s['variant']}, batch {s['batch']}, ms per clip):", ""]
        lines += _table(
            ["T", *(str(r["T"]) for r in s["by_T"]), "exponent"],
            [
                [
                    f"{s['by_T'][0]['size']} px",
                    *(f"{r['ms_per_clip']:.1f}" for r in s["by_T"]),
                    f"{s['exponent_T']:.2f}",
                ]
            ],
        )
        lines += [""]
        lines += _table(
            ["size", *(f"{r['size']}²" for r in s["by_size"]), "exponent (in pixels)"],
            [[f"T={T}", *(f"{r['ms_per_clip']:.1f}" for r in s["by_size"]), f"{s['exponent_pixels']:.2f}"]],
        )
    if "training" in result:
        lines += ["", f"**Default training path** (`stnet train` here): {result['training']['variant']}."]
    if "deployment" in result:
        d = result["deployment"]
        lines += ["", f"**Default deployment path** (`--backend auto` here): {d['variant']} ({d['reason']})."]
    rows = [[t.what, t.shown, t.goal, "yes" if t.met else "**no**"] for t in targets(result)]
    lines += [
        "",
        "**Targets** (ratios within this run):",
        "",
        *_table(["target", "measured", "goal", "met"], rows),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------


def run_bench(
    quick: bool = False,
    compile: bool | None = None,
    device_name: str = "auto",
    sections: Sequence[str] = ("ceiling", "train", "infer", "data", "scaling"),
    say: Callable[[str], None] | None = None,
    command: str = "stnet bench",
) -> dict[str, Any]:
    """Measure everything in ``sections``; returns the JSON-ready result (``render`` makes markdown).
    Progress goes to ``say`` (default: stderr)."""
    from stnet.runtime import resolve_device

    say = say or log_stderr
    device = resolve_device(device_name)
    plan = QUICK_WORKLOAD if quick else FULL_WORKLOAD
    if compile is not None:
        plan = replace(plan, compile=compile)
    start = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "plan": asdict(plan), "command": command, "cases": []}
    say(
        f"stnet bench ({'quick' if quick else 'full'}) on {device}: "
        f"StNet-R{plan.depth}, T={plan.T}, N={plan.N}"
    )
    ceiling: dict[str, Any] = {}  # measured in every run (seconds): the report and targets divide by it
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rate, n = matmul_ceiling(dtype, plan.matmul_sizes, plan.matmul_seconds, device)
        ceiling[name], ceiling[name + "_n"] = rate, n
        say(f"  ceiling {name}: {gflops_text(rate)} GFLOP/s ({n}×{n} matmul)")
    result["ceiling"] = ceiling
    variants = [FP32, FAST] + ([compiled(FP32), compiled(FAST)] if plan.compile else [])
    if "train" in sections:
        default = training_variant(device)
        result["training"] = {"variant": default}
        say(f"  default training path (precision auto, channels-last): {default}")
        train_variants = [FP32, default] + ([compiled(default)] if plan.compile else [])
        result["cases"] += [asdict(c) for c in run_train_cases(plan, train_variants, device, say)]
    if "infer" in sections:
        variant, why = deployment_variant()
        result["deployment"] = {"variant": variant, "reason": why}
        say(f"  default deployment path (--backend auto): {variant} ({why})")
        result["cases"] += [asdict(c) for c in run_infer_cases(plan, variants, device, say)]
    if "data" in sections:
        result["data"] = run_data(plan, say)
    if "scaling" in sections:
        result["scaling"] = run_scaling(plan, device, say)
    result["seconds"] = time.perf_counter() - start
    result["targets"] = [asdict(t) for t in targets(result)]
    return result


SECTIONS = ("ceiling", "train", "infer", "data", "scaling")


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure training/inference speed, the machine's ceiling, data loading; check the targets",
        description="Measure, in one run: the dense-matmul ceiling (fp32, bf16); StNet-R50 training and "
        "inference clips/s, achieved GFLOP/s and peak memory for fp32, bf16 + channels-last, "
        "torch.compile, ONNX Runtime and OpenVINO; a plain ResNet-50 TSN baseline; clip-store loading and "
        "the data wait of a real training epoch; cost vs T and input size. Prints markdown tables and the "
        "targets (ratios within the run). The full run took 9-12 minutes on 2 AVX-512 CPU cores, 52 on 2 "
        "AVX2-only cores (docs/benchmarks.md)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a small model and tiny inputs: checks everything runs"
    )
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--markdown", default=None, help="also write the markdown report to this file")
    p.add_argument("--only", default=None, help=f"comma-separated sections to run (of {','.join(SECTIONS)})")
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile variants (auto: in the full run; they take minutes to compile)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default auto)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Exit status 0 whether or not the targets are met: they are reported, not enforced."""
    from stnet.fileio import atomic_write_bytes

    if rest:
        raise BenchError(f"unexpected arguments: {' '.join(rest)}")
    sections = SECTIONS if args.only is None else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise BenchError(f"--only: unknown section {unknown[0]!r}; use some of {','.join(SECTIONS)}")
    command = "stnet bench" + (" --quick" if args.quick else "")
    command += f" --only {args.only}" if args.only else ""
    command += f" --compile {args.compile}" if args.compile != "auto" else ""
    command += f" --device {args.device}" if args.device != "auto" else ""
    compile_ = {"auto": None, "on": True, "off": False}[args.compile]
    result = run_bench(args.quick, compile_, args.device, sections, command=command)
    report = render(result)
    print("\n" + report, end="")
    if args.json:
        atomic_write_bytes(Path(args.json), (json.dumps(result, indent=2) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), report.encode())
    return 0
