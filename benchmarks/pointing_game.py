"""Pointing game of ``stnet explain`` on a ``stnet demo`` output: how much Grad-CAM mass falls inside
the moving object's box, against the box's share of the frame, over the demo's val videos.

    .venv/bin/python benchmarks/pointing_game.py DEMO_OUT [--layer layer4] [--split val] [--limit K]

The boxes come from the synth settings the demo recorded (``synth/synth.json``): each video's scene is
drawn again (:func:`stnet.synth.video_boxes`), nothing is written into the demo folder. The heat map
explained is the predicted class's (``--true-class``: the labelled class's). Prints one line per layer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stnet.checkpoint import eval_model
from stnet.datasets import ClipSpec
from stnet.explain import LAYERS, pointing_game
from stnet.synth import box_mask, video_boxes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo", type=Path, help="a `stnet demo` output folder")
    p.add_argument("--layer", action="append", choices=LAYERS, help="stage(s) to explain (default layer4)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=None, help="only the first K videos of the split")
    p.add_argument("--true-class", action="store_true", help="explain the labelled class, not the predicted")
    args = p.parse_args(argv)
    synth = args.demo / "synth"
    settings = json.loads((synth / "synth.json").read_text())["settings"]
    model, cfg, names = eval_model(args.demo / "run" / "checkpoints" / "best.pt")
    spec = ClipSpec.from_config(cfg)
    lines = [line.split() for line in (synth / f"{args.split}.txt").read_text().splitlines() if line.strip()]
    lines = lines[: args.limit] if args.limit else lines
    size = settings["size"]

    def videos():
        for rel, _label in lines:
            motion, index = Path(rel).parent.name, int(Path(rel).stem.rsplit("_", 1)[1])
            boxes = video_boxes(motion, index, seed=settings["seed"], size=size, frames=settings["frames"])
            yield synth / rel, lambda i, b=boxes: box_mask(b[i], size)

    labels = {str(synth / rel): int(label) for rel, label in lines}
    true_class = (lambda video: labels[str(video)]) if args.true_class else None
    for layer in args.layer or ["layer4"]:
        start = time.perf_counter()
        score = pointing_game(model, spec, videos(), layer=layer, true_class=true_class)
        print(f"{layer}: {score.line()} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"model: {args.demo / 'run/checkpoints/best.pt'} ({', '.join(names)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
