"""Inference throughput and latency of StNet-R50 in every deployment path, in one run.

    .venv/bin/python benchmarks/infer.py           # ~10 minutes on 2 cores (torch.compile and exports)
    .venv/bin/python benchmarks/infer.py --quick   # a smoke run (R18, 64 px)

For each input size (112, 224) and batch (1, 8), on random clips of the real shape (T=7, N=5, 101
classes): PyTorch eager fp32, PyTorch bf16 autocast + channels-last, torch.compile (fp32 and bf16), and
ONNX Runtime fp32 on a file written by `stnet export`'s code. Each variant warms up, then runs a fixed
number of calls; reported: clips/s and per-clip latency (median and p99 over calls). Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def timed_calls(fn: Callable[[], object], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def torch_variant(
    model: torch.nn.Module, x: torch.Tensor, bf16: bool, compiled: bool
) -> Callable[[], object]:
    from stnet.model import to_channels_last

    if bf16:
        to_channels_last(model)
    net = torch.compile(model) if compiled else model

    @torch.no_grad()
    def run() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(x)

    return run


def onnx_variant(
    model: torch.nn.Module, size: int, T: int, N: int, tmp: Path
) -> Callable[[np.ndarray], object]:
    from stnet.config import load_config
    from stnet.export import ModelInfo, export_model, load_exported

    cfg = load_config(
        None,
        {"depth": 50, "class_num": 101, "T": T, "N": N, "target_size": size, "short_size": size},
        warn=False,
    )
    info = ModelInfo.from_config(cfg, [str(i) for i in range(cfg.class_num)])
    path = tmp / f"stnet_{size}.onnx"
    report = export_model(model, info, path)
    print(f"  exported {path.name}: max |diff| {report.max_abs_diff:.1e}", flush=True)
    return load_exported(path)


def bench(depth: int, sizes: list[int], batches: list[int], calls: int, compile_too: bool) -> list[dict]:
    from stnet.model import build_model

    T, N = 7, 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            base = build_model(num_classes=101, T=T, N=N, depth=depth).eval()
            runner = onnx_variant(base, size, T, N, Path(tmp))
            for batch in batches:
                x = torch.randn(batch, T, 3 * N, size, size)
                variants: list[tuple[str, Callable[[], object]]] = [
                    (
                        "PyTorch eager fp32",
                        torch_variant(build_model(101, T, N, depth).eval(), x, False, False),
                    ),
                    (
                        "PyTorch bf16 + channels_last",
                        torch_variant(build_model(101, T, N, depth).eval(), x, True, False),
                    ),
                ]
                if compile_too:
                    variants += [
                        (
                            "torch.compile fp32",
                            torch_variant(build_model(101, T, N, depth).eval(), x, False, True),
                        ),
                        (
                            "torch.compile bf16 + channels_last",
                            torch_variant(build_model(101, T, N, depth).eval(), x, True, True),
                        ),
                    ]
                xs = x.numpy()
                variants.append(("ONNX Runtime fp32", lambda xs=xs, runner=runner: runner(xs)))
                for name, fn in variants:
                    times = timed_calls(fn, calls, warmup=2)
                    per_call = statistics.median(times)
                    rows.append(
                        {
                            "variant": name,
                            "size": size,
                            "batch": batch,
                            "clips_per_s": batch / per_call,
                            "latency_ms_p50": 1000 * per_call / batch,
                            "latency_ms_p99": 1000 * float(np.percentile(times, 99)) / batch,
                        }
                    )
                    r = rows[-1]
                    print(f"  {name} {size}px batch {batch}: {r['clips_per_s']:.2f} clips/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="R18 at 64 px, 2 calls: checks the script runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.quick:
        rows = bench(18, [64], [1, 2], calls=2, compile_too=not args.no_compile)
    else:
        rows = bench(50, [112, 224], [1, 8], calls=5, compile_too=not args.no_compile)
    print(f"\ntorch threads: {torch.get_num_threads()}\n")
    print("| input | batch | variant | clips/s | latency per clip p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| 7×15×{r['size']}² | {r['batch']} | {r['variant']} | {r['clips_per_s']:.2f} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} |"
        )


if __name__ == "__main__":
    main()
