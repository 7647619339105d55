"""DDP training step under torchrun (2 gloo processes on CPU), channels-last: plain DDP vs `wrap_ddp`.

    .venv/bin/python benchmarks/ddp_step.py                 # R18, 112 px, batch 2 per process
    .venv/bin/python benchmarks/ddp_step.py --depth 50 --steps 10

Plain ``DistributedDataParallel(model)`` with gradients set to None between steps is what `stnet train`
did before: autograd's gradients of channels-last 1×1 (and depthwise/temporal) conv weights have other
strides than their parameters, so DDP warns "Grad strides do not match bucket view strides" and copies
them into its buckets every step. ``stnet.distributed.wrap_ddp`` makes every gradient a bucket view
(zeroed in place). Each variant runs in its own torchrun launch (the warning is printed once per
process), alternating over ``--rounds`` launches. Prints each launch's median step time and whether the
warning appeared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("plain", "wrap_ddp")
WARNING = "Grad strides do not match bucket view strides"


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from stnet.distributed import wrap_ddp
    from stnet.model import StNet, to_channels_last

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = to_channels_last(StNet(num_classes=101, T=args.T, N=args.N, depth=args.depth))
    plain = args.variant == "plain"
    ddp = DistributedDataParallel(model) if plain else wrap_ddp(model, torch.device("cpu"))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, args.T, 3 * args.N, args.size, args.size)
    y = torch.randint(0, 101, (args.batch,))
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=plain)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(f"RESULT {statistics.median(times[args.warmup :]) * 1000:.1f}", flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--N", type=int, default=5)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=2, help="clips per process")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="launches per variant, alternating")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set for the workers
    args = parser.parse_args()
    if args.variant:
        worker(args)
        return
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shape = f"T={args.T} N={args.N} {args.size} px, batch {args.batch} × 2 processes (gloo)"
    print(f"StNet-R{args.depth}, {shape}")
    print("| DDP wrapping | median step (ms), per launch | stride warning |\n|---|---|---|")
    results: dict[str, list[str]] = {v: [] for v in VARIANTS}
    warned: dict[str, bool] = dict.fromkeys(VARIANTS, False)
    for _ in range(args.rounds):  # alternating, so that a shared machine's load hits both alike
        for variant in VARIANTS:
            cmd = [
                torchrun,
                "--standalone",
                "--nproc_per_node=2",
                __file__,
                *sys.argv[1:],
                "--variant",
                variant,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(done.stdout[-2000:] + done.stderr[-2000:])
            results[variant] += [
                line.split()[1] for line in done.stdout.splitlines() if line.startswith("RESULT")
            ]
            warned[variant] |= WARNING in done.stderr
    for variant in VARIANTS:
        print(f"| {variant} | {', '.join(results[variant])} | {'yes' if warned[variant] else 'no'} |")


if __name__ == "__main__":
    main()
