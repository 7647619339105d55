"""Peak memory of a Kinetics-400-sized multi-view evaluation through :class:`stnet.metrics.ScoreAccumulator`.

    .venv/bin/python benchmarks/eval_memory.py                # K400 val: 19,761 videos x 30 views x 400
    .venv/bin/python benchmarks/eval_memory.py --videos 2000  # a smaller run

No model runs: batches of random logits (the true class a little higher, so the accuracies are not
chance) go through the accumulator the way ``stnet.engine.evaluate`` feeds it, 8 videos x 30 views a
batch, then the per-video result is computed. The baseline is the process's peak RSS after the imports
and the first batch of logits; the target is a peak at most 200 MiB above it. Prints one markdown row.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from stnet.metrics import ScoreAccumulator

TARGET_MIB = 200


def peak_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def logits_batch(rng: np.random.Generator, labels: np.ndarray, views: int, classes: int) -> np.ndarray:
    """(videos x views, classes) float32 logits, video-major, the true class raised by 0.5."""
    x = rng.standard_normal((len(labels), views, classes), dtype=np.float32)
    x[np.arange(len(labels)), :, labels] += 0.5
    return x.reshape(-1, classes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=19_761, help="videos (default: Kinetics-400 val)")
    p.add_argument("--views", type=int, default=30, help="views per video (default 10 clips x 3 crops)")
    p.add_argument("--classes", type=int, default=400)
    p.add_argument("--batch", type=int, default=8, help="videos per batch (default 8)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.videos)
    view_ids = np.tile(np.arange(args.views), args.batch)
    logits_batch(rng, labels[: args.batch], args.views, args.classes)  # allocate a batch once: the baseline
    baseline = peak_rss_mib()
    start = time.perf_counter()
    acc = ScoreAccumulator()
    for first in range(0, args.videos, args.batch):
        ids = np.arange(first, min(first + args.batch, args.videos))
        x = logits_batch(rng, labels[ids], args.views, args.classes)
        rows = np.repeat(ids, args.views)
        acc.add(rows, x, labels[rows], view_ids=view_ids[: len(rows)])
    result = acc.result()
    seconds = time.perf_counter() - start
    above = peak_rss_mib() - baseline
    print(
        f"| {args.videos} videos x {args.views} views x {args.classes} classes | baseline {baseline:.0f} MiB "
        f"| peak +{above:.0f} MiB | {seconds:.1f} s | top1 {100 * result.top1:.2f}% "
        f"top5 {100 * result.top5:.2f}% mean-class {100 * result.mean_class_accuracy:.2f}% |"
    )
    ok = above <= TARGET_MIB
    print(
        f"target: peak <= {TARGET_MIB} MiB above the baseline: {'met' if ok else 'MISSED'}", file=sys.stderr
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
