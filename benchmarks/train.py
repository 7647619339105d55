"""Training throughput and peak memory of StNet-R50: fp32 vs bf16 autocast + channels-last.

    .venv/bin/python benchmarks/train.py           # a few minutes on 2 cores
    .venv/bin/python benchmarks/train.py --quick   # a smoke run (R18, tiny inputs)

Each configuration runs in a fresh process (so peak RSS is its own) for a few SGD steps on random clips
of the real shape (T=7, N=5) after warm-up steps; reported: clips/s and peak resident memory. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_config(depth: int, size: int, batch: int, precision: str, steps: int, warmup: int) -> dict:
    import torch
    import torch.nn.functional as F

    from stnet.config import load_config
    from stnet.engine import autocast_dtype
    from stnet.model import build_model, to_channels_last
    from stnet.optim import build_optimizer

    torch.manual_seed(0)
    cfg = load_config(None, {"depth": depth, "class_num": 101}, warn=False)
    model = build_model(**cfg.model_kwargs())
    fast = precision == "bf16"
    if fast:
        to_channels_last(model)
    optimizer = build_optimizer(model, cfg, 0.001)
    dtype = autocast_dtype("bf16" if fast else "fp32", torch.device("cpu"))
    x = torch.randn(batch, 7, 15, size, size)
    y = torch.randint(0, 101, (batch,))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    per_step = sorted(times)[len(times) // 2]
    return {
        "depth": depth,
        "size": size,
        "batch": batch,
        "precision": "bf16 + channels_last" if fast else "fp32",
        "clips_per_s": batch / per_step,
        "step_s": per_step,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="R18 at 64 px, 1 step: checks the script runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_config(**json.loads(args.child))))
        return
    if args.quick:
        configs = [dict(depth=18, size=64, batch=2, precision=p, steps=1, warmup=1) for p in ("fp32", "bf16")]
    else:
        configs = [
            dict(depth=50, size=size, batch=batch, precision=p, steps=3, warmup=1)
            for size, batch in ((112, 16), (224, 4))
            for p in ("fp32", "bf16")
        ]
    rows = []
    for config in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(config)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| model | input | batch | precision | clips/s | s/step | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| StNet-R{r['depth']} | 7×15×{r['size']}² | {r['batch']} | {r['precision']} | "
            f"{r['clips_per_s']:.2f} | {r['step_s']:.2f} | {r['peak_rss_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
