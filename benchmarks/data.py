"""Data-pipeline throughput: clips/s per worker from the clip store and from raw videos, and prepare speed.

    .venv/bin/python benchmarks/data.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/data.py --quick    # a smoke run

Everything runs in one process with one torch thread, i.e. what one DataLoader worker does. Videos are
synthetic but video-like (smooth gradients, a moving disc, mild noise) at UCF101's 320×240, 25 fps, so
JPEG and H.264 sizes are realistic. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stnet import cli
from stnet.bench import video_like_frames as synthetic_frames
from stnet.clipstore import ClipReader
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.encode import encode_video


def run_prepare(src: Path, out: Path, short_side: int, workers: int) -> float:
    """Seconds ``stnet prepare list --folders`` takes on ``src``."""
    argv = ["list", "--root", str(src), "--folders", "--out", str(out), "--short-side", str(short_side)]
    start = time.perf_counter()
    code = cli.main(["prepare", *argv, "--workers", str(workers), "--quiet"])
    if code != 0:
        raise RuntimeError("prepare failed")
    return time.perf_counter() - start


def per_call_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer videos and repeats")
    parser.add_argument("--frames", type=int, default=180, help="frames per video (UCF101 averages ~186)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 40
    n_videos = 3 if args.quick else 12
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = synthetic_frames(args.frames)
        src = root / "src"
        for i in range(n_videos):
            (src / "train" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
            encode_video(src / "train" / f"c{i % 3}" / f"v{i}.avi", frames, codec="mpeg4", bit_rate=1_000_000)
        mp4 = encode_video(root / "video.mp4", frames, crf=23, preset="fast")
        avi = src / "train" / "c0" / "v0.avi"

        # prepare throughput (UCF-like: MPEG-4 AVI 320x240 -> short side 128)
        for workers in (1, 2):
            seconds = run_prepare(src, root / f"prep{workers}", 128, workers)
            what = f"prepare, {args.frames}-frame 320×240 AVI → short side 128, {workers} worker(s)"
            rate = n_videos / seconds
            rows.append((what, f"{rate:.1f} videos/s", f"{rate * args.frames:.0f} frames/s"))
        out256 = root / "prep256"
        run_prepare(src, out256, 256, 2)

        store128 = next((root / "prep1" / "clips").rglob("*.stclip"))
        store256 = next((out256 / "clips").rglob("*.stclip"))
        size_kb = store128.stat().st_size / 1024 / args.frames
        with ClipReader(store128) as reader:
            w, h = reader.info.width, reader.info.height

        ucf, kinetics = ClipSpec("ucf101", 7, 5, 112, 128), ClipSpec("kinetics400", 7, 5, 224, 256)
        cases = [
            ("store, UCF recipe 7×5 @112, train", store128, ucf, "train"),
            ("store, UCF recipe 7×5 @112, val", store128, ucf, "val"),
            ("store, Kinetics recipe 7×5 @224, train", store256, kinetics, "train"),
            ("store, Kinetics recipe 7×5 @224, val", store256, kinetics, "val"),
            ("raw H.264 mp4, UCF recipe 7×5 @112, train", mp4, ucf, "train"),
            ("raw MPEG-4 AVI, UCF recipe 7×5 @112, train", avi, ucf, "train"),
            ("raw H.264 mp4, Kinetics recipe 7×5 @224, train", mp4, kinetics, "train"),
        ]
        for name, path, spec, split in cases:
            ds = VideoClipDataset([Sample(path, 0)], spec, split, seed=0)
            raw = not str(path).endswith(".stclip")
            ms = per_call_ms(lambda ds=ds: ds[0], max(3, repeats // 4) if raw else repeats)
            rows.append((name, f"{1000 / ms:.0f} clips/s", f"{ms:.1f} ms/clip"))

    print(f"torch threads: 1; store frames {w}×{h} at JPEG quality 90 ≈ {size_kb:.1f} KiB/frame\n")
    print("| what (one process, one thread) | throughput | cost |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
