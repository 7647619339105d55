"""`stnet predict --timeline`: peak memory does not grow with the video's length, and speed as a
multiple of real time.

Writes a 1-minute and a 10-minute 25 fps video (160x120, moving bars) once into --work, then runs each
timeline in a fresh child process and reports its peak RSS (``ru_maxrss``) and the video seconds per
wall second, for an untrained StNet-R18 of the demo's quick size (T=4, N=3, 48 px) and StNet-R50 at
112 px (T=7, N=5, ucf101 recipe): the speed depends on the shapes, not on the weights. Runs are
interleaved (A, B, A, B, ...) and the median is reported, as the machine is shared.

    PYTHONPATH=src python benchmarks/timeline.py --work /tmp/timeline_bench [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {
    "R18-demo": ["--depth", "18", "--T", "4", "--N", "3", "--target_size", "48", "--short_size", "48"],
    "R50-112": ["--depth", "50", "--T", "7", "--N", "5", "--target_size", "112", "--short_size", "128"],
}
COMMON = ["--dataset_type", "ucf101", "--class_num", "4"]
FPS = 25


def write_video(path: Path, seconds: int) -> Path:
    from stnet.encode import VideoWriter

    if path.exists():
        return path
    x = np.arange(160)
    with VideoWriter(path, fps=FPS, crf=28, preset="ultrafast") as writer:
        for i in range(seconds * FPS):
            row = ((x + 3 * i) % 40 < 20).astype(np.uint8) * 200
            writer.write(np.broadcast_to(row[None, :, None], (120, 160, 3)).copy())
    return path


def write_weights(folder: Path, name: str) -> Path:
    import torch
    from safetensors.torch import save_file

    from stnet.config import load_config
    from stnet.model import build_model

    path = folder / f"{name}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = build_model(load_config(None, [*MODELS[name], *COMMON]))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def child(video: str, weights: str, name: str) -> None:
    """One timeline in this process: print {"wall_s", "maxrss_mib", "windows", "duration"}."""
    import resource

    from stnet.checkpoint import checkpoint_config
    from stnet.inference import checkpoint_runner
    from stnet.timeline import timeline

    flags = [*MODELS[name], *COMMON]
    runner = checkpoint_runner(weights, checkpoint_config(weights, None, flags), log=lambda _m: None)
    start = time.perf_counter()
    result = timeline(runner, video)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"wall_s": wall, "maxrss_mib": rss, "windows": len(result.windows), "duration": result.duration}
        )
    )


def run_child(video: Path, weights: Path, name: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(video), str(weights), name],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/timeline_bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    short, long = write_video(work / "1min.mp4", 60), write_video(work / "10min.mp4", 600)
    weights = {name: write_weights(work, name) for name in MODELS}
    rss = {v.name: run_child(v, weights["R18-demo"], "R18-demo") for v in (short, long)}
    for v, r in rss.items():
        print(f"R18-demo timeline of {v}: peak RSS {r['maxrss_mib']:.0f} MiB, {r['windows']} windows")
    diff = rss["10min.mp4"]["maxrss_mib"] - rss["1min.mp4"]["maxrss_mib"]
    print(f"peak RSS 10 min - 1 min: {diff:+.1f} MiB")
    speeds: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name in MODELS:  # interleaved
            r = run_child(short, weights[name], name)
            speeds[name].append(r["duration"] / r["wall_s"])
    for name, values in speeds.items():
        print(
            f"{name} on the 1-minute video: {statistics.median(values):.1f}x real time "
            f"(median of {len(values)}: {', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
