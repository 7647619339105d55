"""Disk budget of a clip store on Kinetics-like videos: bytes per video at the defaults and with --fps,
--quality, --short-side, --max-frames, and what they mean for Kinetics-400's ~240k videos.

    .venv/bin/python benchmarks/disk_budget.py              # 20 clips, a few minutes on 2 cores
    .venv/bin/python benchmarks/disk_budget.py --clips 4    # a smoke run

The sources are synthetic stand-ins for Kinetics-400 as most pipelines download it (resized to 340×256):
10 s, 340×256, 25 or 30 fps, H.264 (x264 CRF 23, the ffmpeg default), with a panning textured
background, moving objects and sensor noise. JPEG sizes depend on the content: real footage differs, so
the ratios between rows carry over better than the absolute bytes. Prints a markdown table and the
report's ``bytes`` of each run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stnet import cli
from stnet.encode import encode_video
from stnet.fileio import human_bytes

KINETICS_VIDEOS = 240_000
WIDTH, HEIGHT, SECONDS = 340, 256, 10


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour texture: noise low-passed at a few scales (an FFT filter), 0..255 float (H, W, 3)."""
    out = np.zeros((height, width, 3), np.float32)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    for scale, weight in ((0.01, 1.0), (0.04, 0.5), (0.15, 0.2)):
        spectrum = np.fft.fft2(rng.normal(size=(3, height, width)))
        smooth = np.real(np.fft.ifft2(spectrum * np.exp(-((radius / scale) ** 2))))
        smooth /= smooth.std() + 1e-9
        out += weight * np.moveaxis(smooth, 0, -1)
    out = (out - out.min()) / (out.max() - out.min())
    return out * 230 + 10


def kinetics_like_frames(seed: int, fps: int) -> np.ndarray:
    """``SECONDS · fps`` frames (uint8, (n, 256, 340, 3)): a panning texture, three moving ellipses, noise."""
    rng = np.random.default_rng(seed)
    n = SECONDS * fps
    world = _texture(rng, HEIGHT + 64, WIDTH + 160)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    objects = [
        (rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(-60, 60), rng.uniform(-30, 30),
         rng.uniform(18, 45), rng.uniform(10, 30), rng.uniform(0, 255, 3))
        for _ in range(3)
    ]  # fmt: skip
    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n):
        t = i / fps
        x0 = int(80 + 70 * np.sin(2 * np.pi * t / SECONDS))  # a slow pan
        y0 = int(32 + 24 * np.sin(2 * np.pi * t / 7))
        frame = world[y0 : y0 + HEIGHT, x0 : x0 + WIDTH].copy()
        for cx, cy, vx, vy, a, b, colour in objects:
            x, y = (cx + vx * t) % WIDTH, (cy + vy * t) % HEIGHT
            inside = ((xx - x) / a) ** 2 + ((yy - y) / b) ** 2 < 1
            frame[inside] = 0.3 * frame[inside] + 0.7 * colour
        frame += rng.normal(0, 2.5, (HEIGHT, WIDTH, 1))
        frames[i] = np.clip(frame, 0, 255)
    return frames


def make_sources(root: Path, clips: int) -> list[Path]:
    paths = []
    for i in range(clips):
        fps = (25, 30)[i % 2]
        path = root / f"class{i % 4}" / f"clip{i:03d}.mp4"
        encode_video(path, kinetics_like_frames(i, fps), fps=fps, crf=23, preset="veryfast")
        paths.append(path)
    return paths


def prepare(src: Path, out: Path, flags: list[str]) -> tuple[dict, float]:
    argv = ["prepare", "list", "--root", str(src), "--folders", "--out", str(out), "--quiet", *flags]
    start = time.perf_counter()
    if cli.main(argv) != 0:
        raise RuntimeError(f"prepare {' '.join(flags)} failed")
    seconds = time.perf_counter() - start
    return json.loads((out / "prepare_report.json").read_text())["bytes"], seconds


VARIANTS = {
    "defaults (every frame, short side 256, JPEG q90)": [],
    "--fps 12": ["--fps", "12"],
    "--fps 12 --quality 75": ["--fps", "12", "--quality", "75"],
    "--fps 12 --short-side 128": ["--fps", "12", "--short-side", "128"],
    "--max-frames 64": ["--max-frames", "64"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        sources = make_sources(root / "videos", args.clips)
        print(f"encoded {len(sources)} clips in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        rows = []
        for i, (name, flags) in enumerate(VARIANTS.items()):
            counts, seconds = prepare(
                root / "videos", root / f"store{i}", [*flags, "--workers", str(args.workers)]
            )
            rows.append((name, counts, seconds))
            print(name, json.dumps(counts), f"{seconds:.1f} s", file=sys.stderr)
    source = rows[0][1]["source"] / args.clips
    print(f"sources: {args.clips} clips, {human_bytes(source)} per video on average "
          f"(Kinetics-400 at this size: {human_bytes(source * KINETICS_VIDEOS)})\n")  # fmt: skip
    print("| prepare flags | store per video | store / source | Kinetics-400 (240k videos) |")
    print("|---|---|---|---|")
    for name, counts, _ in rows:
        per_video = counts["per_video"]
        print(
            f"| {name} | {human_bytes(per_video)} | {counts['store_to_source']:.2f}x "
            f"| {human_bytes(per_video * KINETICS_VIDEOS)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
