"""``stnet demo``: the whole workflow on the built-in synthetic motion dataset, in minutes on a CPU.

It runs the real commands, in order, printing each as you would type it: ``synth`` → ``prepare list``
→ ``train`` → ``eval`` → ``export`` (ONNX) → ``infer`` → ``predict`` on held-out videos → ``explain``
(Grad-CAM) of one of them, then a summary.
Each runs as ``python -m stnet ...`` in a child process (or through the ``runner`` given to
:func:`run_demo`); the summary comes from the files the commands write and ``predict --json``.
``--control`` also trains the identical pipeline on one frame per video (T=1, N=1): since no single
frame of the synthetic videos carries the class, it stays near chance, which shows that the task
needs StNet's temporal modelling.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stnet.argtypes import MAX_SEED, int_arg
from stnet.errors import StnetError

MARKER = "stnet-demo.json"


class DemoError(StnetError, RuntimeError):
    """A demo step failed (its own error was printed above)."""


Runner = Callable[[Sequence[str]], str]
"""Runs ``stnet ARGV`` with its output shown; returns what it printed on stdout; raises if it fails."""


def subprocess_runner(argv: Sequence[str]) -> str:
    """Run ``python -m stnet ARGV`` with this Python and this stnet in a child process: its stdout is
    shown as it comes and returned, its stderr goes to ours."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "stnet", *argv]
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if child.returncode != 0:
        raise DemoError(f"`stnet {argv[0]}` failed (exit code {child.returncode}); see its message above")
    return "".join(lines)


@dataclass(frozen=True)
class Preset:
    """Everything the demo chooses: the dataset and the training recipe."""

    name: str
    classes: tuple[str, ...] | None  # None: all eight
    per_class: int  # train + val videos per class
    test_per_class: int
    size: int
    frames: int
    T: int
    N: int
    epochs: int
    lr: float
    batch_size: int
    warmup_epochs: int

    def describe(self, depth: int) -> str:
        classes = len(self.classes) if self.classes else 8
        return (
            f"{classes} classes x {self.per_class} videos ({self.size}x{self.size}, {self.frames} frames); "
            f"StNet-R{depth}, T={self.T} segments x N={self.N} frames, {self.size} px crops, "
            f"{self.epochs} epochs, batch {self.batch_size}, SGD lr {self.lr:g} constant"
        )


FULL_PRESET = Preset(
    name="full",
    classes=None,
    per_class=100,
    test_per_class=2,
    size=64,
    frames=48,
    T=8,
    N=3,
    epochs=8,
    lr=0.01,
    batch_size=16,
    warmup_epochs=0,
)
QUICK_PRESET = Preset(
    name="quick",
    classes=("moves_left", "moves_right", "right_then_left", "left_then_right"),
    per_class=150,
    test_per_class=1,
    size=48,
    frames=24,
    T=4,
    N=3,
    epochs=3,
    lr=0.01,
    batch_size=8,
    warmup_epochs=0,
)


@dataclass
class Step:
    name: str
    argv: list[str]
    seconds: float = 0.0
    output: str = ""


def _run_step(step: Step, index: int, total: int, runner: Runner) -> None:
    print(f"\n[{index}/{total}] {step.name}\n$ stnet {shlex.join(step.argv)}", flush=True)
    start = time.perf_counter()
    step.output = runner(step.argv)
    step.seconds = time.perf_counter() - start


def _check_out(out: Path) -> None:
    """The demo writes only into a new folder, an empty one, or one of its own earlier outputs."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise DemoError(f"{out} exists and is not a demo output folder: choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def train_args(preset: Preset, depth: int, data: Path, run: Path, seed: int, T: int, N: int) -> list[str]:
    return [
        "train",
        "--dataset_path", str(data),
        "--output_dir", str(run),
        "--class_num", str(len(preset.classes) if preset.classes else 8),
        "--depth", str(depth),
        "--T", str(T),
        "--N", str(N),
        "--dataset_type", "ucf101",  # N frames spread over 2N: larger steps between them
        "--target_size", str(preset.size),
        "--short_size", str(preset.size),
        "--batch_size", str(preset.batch_size),
        "--num_epochs", str(preset.epochs),
        "--lr", str(preset.lr),
        "--lr_schedule", "constant",  # a decay this early stops learning before the order is learnt
        "--warmup_epochs", str(preset.warmup_epochs),
        "--weight_decay", "0.0001",
        "--eval_start_epoch", "1",  # val every epoch: 160 videos take seconds, the curves show them
        "--keep_checkpoint_max", "1",
        "--flip", "false",  # a mirrored clip of "moves_left" shows "moves_right"
        "--seed", str(seed),
    ]  # fmt: skip


def demo_steps(out: Path, preset: Preset, depth: int, seed: int, control: bool) -> list[Step]:
    """The commands the demo runs, in order (``predict`` gets the test videos once they exist)."""
    synth, data, run = out / "synth", out / "data", out / "run"
    ckpt = str(run / "checkpoints" / "best.pt")
    onnx = str(out / "stnet_demo.onnx")
    synth_args = ["synth", "--out", str(synth), "--per-class", str(preset.per_class)]
    synth_args += ["--test-per-class", str(preset.test_per_class), "--size", str(preset.size)]
    synth_args += ["--frames", str(preset.frames), "--seed", str(seed)]
    if preset.classes:
        synth_args += ["--classes", ",".join(preset.classes)]
    prepare = ["prepare", "list", "--root", str(synth), "--label-file", str(synth / "classes.txt")]
    prepare += ["--list", f"train={synth / 'train.txt'}", "--list", f"val={synth / 'val.txt'}"]
    prepare += ["--out", str(data), "--short-side", str(preset.size)]
    infer = ["infer", "--model", onnx, "--dataset_path", str(data), "--out", str(out / "infer")]
    steps = [
        Step("make the synthetic dataset", synth_args),
        Step("prepare it (decode once into a clip store)", prepare),
        Step("train StNet", train_args(preset, depth, data, run, seed, preset.T, preset.N)),
        Step(
            "evaluate the best checkpoint on val (fp32, as the export runs)",
            ["eval", "--checkpoint", ckpt, "--precision", "fp32", "--out", str(out / "eval")],
        ),
        Step("export to ONNX (verified against PyTorch)", ["export", "--checkpoint", ckpt, "--out", onnx]),
        Step("the export over val (stnet infer, --backend auto)", infer),
        Step("predict held-out test videos", ["predict", "--model", onnx, "--topk", "3", "--json"]),
        Step(
            "explain one test video (Grad-CAM at layer2: layer4's map is 2x2 at the demo's size)",
            ["explain", "--checkpoint", ckpt, "--layer", "layer2", "--out", str(out / "explain")],
        ),
    ]
    if control:
        control_ckpt = str(out / "control" / "checkpoints" / "best.pt")
        steps += [
            Step(
                "control: the same training on one frame per video (T=1, N=1)",
                train_args(preset, depth, data, out / "control", seed, 1, 1),
            ),
            Step(
                "control: evaluate",
                [
                    "eval",
                    "--checkpoint",
                    control_ckpt,
                    "--precision",
                    "fp32",
                    "--out",
                    str(out / "control_eval"),
                ],
            ),
        ]
    return steps


def _test_videos(synth: Path) -> list[str]:
    lines = (synth / "test.txt").read_text().split("\n")
    return [str(synth / line.rsplit(maxsplit=1)[0]) for line in lines if line.strip()]


def _predicted(output: str) -> list[tuple[str, str, float]]:
    """(video, top-1 class, probability) of each video ``stnet predict --json`` classified."""
    rows = []
    for line in output.splitlines():
        if line.strip():
            record = json.loads(line)
            if "top" in record:
                best = record["top"][0]
                rows.append((record["video"], best["class"], best["prob"]))
    return rows


def summary(out: Path, steps: list[Step], preset: Preset, depth: int, control: bool) -> dict[str, Any]:
    """The demo's results, read back from the files the commands wrote."""
    evaluated = json.loads((out / "eval" / "eval.json").read_text())
    inferred = json.loads((out / "infer" / "infer.json").read_text())
    predictions = _predicted(next(step.output for step in steps if step.argv[0] == "predict"))
    correct = sum(Path(video).parent.name == name for video, name, _p in predictions)
    result: dict[str, Any] = {
        "preset": preset.name,
        "settings": preset.describe(depth),
        "val_top1": evaluated["top1"],
        "val_top5": evaluated["top5"],
        "val_videos": evaluated["num_videos"],
        "onnx_top1": inferred["top1"],
        "onnx_clips_per_s": inferred["clips_per_s"],
        "onnx_backend": inferred["backend"],
        "test_correct": correct,
        "test_videos": len(predictions),
        "confusion": str(out / "eval" / "confusion.png"),
        "explanation": str(out / "explain" / f"{Path(_test_videos(out / 'synth')[0]).stem}.gradcam.png"),
        "curves": str(out / "run" / "curves.png"),
        "onnx": str(out / "stnet_demo.onnx"),
        "seconds": {step.name: round(step.seconds, 1) for step in steps},
        "total_seconds": round(sum(step.seconds for step in steps), 1),
    }
    if control:
        result["control_top1"] = json.loads((out / "control_eval" / "eval.json").read_text())["top1"]
    return result


def print_summary(result: dict[str, Any], classes: int) -> None:
    print("\n" + "=" * 78)
    print(f"stnet demo ({result['preset']}): {result['settings']}")
    print(
        f"  val top-1 {100 * result['val_top1']:.1f} %, top-5 {100 * result['val_top5']:.1f} % over "
        f"{result['val_videos']} videos (chance {100 / classes:.1f} %)"
    )
    if "control_top1" in result:
        print(
            f"  control, one frame per video (T=1, N=1): val top-1 {100 * result['control_top1']:.1f} %"
            " -- a single frame cannot tell the classes apart"
        )
    print(
        f"  the export ({result['onnx_backend']}): top-1 {100 * result['onnx_top1']:.1f} % (same videos), "
        f"{result['onnx_clips_per_s']:.0f} clips/s"
    )
    print(f"  held-out test videos predicted correctly: {result['test_correct']}/{result['test_videos']}")
    print(f"  confusion matrix: {result['confusion']}")
    print(f"  training curves:  {result['curves']}")
    print(f"  Grad-CAM:         {result['explanation']}")
    print(f"  model:            {result['onnx']}")
    print(f"  total time {result['total_seconds'] / 60:.1f} min")


def run_demo(
    out: str | Path,
    *,
    depth: int = 18,
    quick: bool = False,
    control: bool = False,
    seed: int = 0,
    runner: Runner = subprocess_runner,
) -> dict[str, Any]:
    """Run the demo into ``out`` with ``runner`` running each command; return the summary (also written
    to ``out/summary.json``)."""
    out = Path(out)
    _check_out(out)
    (out / MARKER).write_text(json.dumps({"quick": quick, "depth": depth, "seed": seed}) + "\n")
    preset = QUICK_PRESET if quick else FULL_PRESET
    print(f"stnet demo ({preset.name}) into {out}: {preset.describe(depth)}")
    steps = demo_steps(out, preset, depth, seed, control)
    for i, step in enumerate(steps, 1):
        if step.argv[0] == "predict":
            step.argv += _test_videos(out / "synth")
        if step.argv[0] == "explain":
            step.argv.insert(1, _test_videos(out / "synth")[0])
        _run_step(step, i, len(steps), runner)
    result = summary(out, steps, preset, depth, control)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result, len(preset.classes) if preset.classes else 8)
    return result


def cmd_demo(args: argparse.Namespace, rest: Sequence[str]) -> int:
    if rest:
        raise DemoError(f"unexpected arguments: {' '.join(rest)}")
    run_demo(args.out, depth=args.depth, quick=args.quick, control=args.control, seed=args.seed)
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole workflow on a built-in synthetic dataset (minutes on a CPU)",
        description="synth -> prepare -> train -> eval -> export (ONNX) -> infer -> predict -> explain, "
        "each printed as the command it runs, then a summary. The synthetic classes differ only in "
        "motion, so they need StNet's temporal modelling; --control shows a one-frame model staying "
        "near chance.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--depth", type=int, choices=(18, 34, 50), default=18, help="ResNet depth (default 18)")
    p.add_argument("--quick", action="store_true", help="4 classes, fewer videos and epochs (3-4 min)")
    p.add_argument("--control", action="store_true", help="also train on one frame per video (T=1, N=1)")
    p.add_argument(
        "--seed", type=int_arg(0, MAX_SEED), default=0, help="seed of the data and the training (default 0)"
    )
    p.set_defaults(func=cmd_demo)
