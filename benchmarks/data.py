"""Data-pipeline throughput: clips/s per worker from the clip store and from raw videos, and prepare speed.

    .venv/bin/python benchmarks/data.py            # about two minutes on 2 cores
    .venv/bin/python benchmarks/data.py --quick    # a smoke run

The first table runs in one process with one torch thread, i.e. what one DataLoader worker does. The
second compares the float32 clips workers used to hand over (normalised on the CPU) with the uint8 clips
they hand over now (normalised on the device): CPU ms per clip in a worker, interleaved A/B repeats
(median), and a real DataLoader's clips/s with 1, 2 and 4 workers. Videos are synthetic but video-like
(smooth gradients, a moving disc, mild noise) at UCF101's 320×240, 25 fps, so JPEG and H.264 sizes are
realistic. Prints markdown tables.
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
from torch.utils.data import DataLoader, RandomSampler

from stnet import cli
from stnet.bench import video_like_frames as synthetic_frames
from stnet.clipstore import ClipReader
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.encode import encode_video
from stnet.transforms import Normalise


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


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms per call of each of ``fns``, called in turn (A, B, A, B, ...) so load drifts hit all."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def loader_clips_per_s(dataset: VideoClipDataset, workers: int, batches: int, batch: int = 8) -> float:
    """Clips/s a DataLoader with ``workers`` workers delivers, timed from its first batch (the workers'
    start-up left out) over ``batches`` more; each worker with one torch thread, as in training."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (batches + 1))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, prefetch_factor=2)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    count = sum(len(y) for _x, y in it)
    return count / (time.perf_counter() - start)


def uint8_rows(store: Path, spec: ClipSpec, repeats: int, batches: int) -> list[tuple[str, str, str, str]]:
    """float32 (before) vs uint8 (now) clips out of the workers: CPU ms/clip, normalisation on the
    device's side, and loader clips/s with 1, 2, 4 workers."""
    floats = VideoClipDataset([Sample(store, 0)] * 16, spec, "train", seed=0)
    pixels = floats.as_uint8()
    k = iter(range(10**9))
    ms = interleaved_ms(
        {"float": lambda: floats[next(k) % 16], "uint8": lambda: pixels[next(k) % 16]}, repeats
    )
    rows = [("CPU ms per clip in a worker", f"{ms['float']:.2f}", f"{ms['uint8']:.2f}", "")]
    rows[0] = (*rows[0][:3], f"{ms['float'] / ms['uint8']:.2f}× less CPU")
    batch8 = torch.stack([pixels[i][0] for i in range(8)])
    normalise = Normalise.from_spec(spec)
    norm_ms = interleaved_ms({"n": lambda: normalise(batch8)}, repeats)["n"] / 8
    rows.append(
        (
            "normalise on the device (here: the CPU, 1 thread), ms per clip",
            "(in the worker)",
            f"{norm_ms:.2f}",
            "",
        )
    )
    mib = batch8[0].numel() / 2**20
    rows.append(("bytes per clip to the device (MiB)", f"{4 * mib:.2f}", f"{mib:.2f}", "4× fewer"))
    torch.set_num_threads(2)  # the loader's main process; workers set themselves to one thread
    for workers in (1, 2, 4):
        rates: dict[str, list[float]] = {"float": [], "uint8": []}
        for _ in range(3):  # interleaved
            for name, ds in (("float", floats), ("uint8", pixels)):
                rates[name].append(loader_clips_per_s(ds, workers, batches))
        f, u = (statistics.median(rates[n]) for n in ("float", "uint8"))
        rows.append(
            (f"DataLoader clips/s, {workers} worker(s), batch 8", f"{f:.1f}", f"{u:.1f}", f"{u / f:.2f}×")
        )
    torch.set_num_threads(1)
    return rows


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
        ab = {
            what: uint8_rows(path, spec, repeats, 4 if args.quick else 12)
            for what, path, spec in (
                ("UCF recipe 7×5 @112, train", store128, ucf),
                ("Kinetics recipe 7×5 @224, train", store256, kinetics),
            )
        }

    print(f"torch threads: 1; store frames {w}×{h} at JPEG quality 90 ≈ {size_kb:.1f} KiB/frame\n")
    print("| what (one process, one thread) | throughput | cost |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    for what, ab_rows in ab.items():
        print(f"\nClips out of the workers, store, {what}: float32 (before) vs uint8 (now)\n")
        print("| what | float32 clips | uint8 clips | ratio |")
        print("|---|---|---|---|")
        for ab_row in ab_rows:
            print("| " + " | ".join(ab_row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
