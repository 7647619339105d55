"""Planning and list writing at Kinetics-400 scale: seconds and peak memory for 60k, 120k and 240k entries.

    .venv/bin/python benchmarks/plan_scale.py              # 60k, 120k, 240k entries (a few minutes)
    .venv/bin/python benchmarks/plan_scale.py --sizes 5000  # a smoke run

Each size runs in a fresh process. A synthetic Kinetics-like tree (400 class folders, empty ``.mp4``
files, 80 % train / 20 % val lists, `path label` lines) is planned with ``plan_list`` (every entry
checked on disk) and executed with the conversion replaced by a stub that reports each video converted
(no decoding: this measures what prepare does around the conversions: duplicate and output checks,
reuse checks, lists, ``classes.txt`` and the report). Then the same plan runs as 4 shards plus
``merge``. Peak memory is the process's peak RSS minus its RSS before the tree was planned. Prints a
markdown table; the last column is each time divided by the previous size's (2.0 = linear).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = 400


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _tree(root: Path, n: int) -> tuple[Path, Path]:
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for c in range(CLASSES):
        (root / "videos" / f"class_{c:03d}").mkdir(parents=True)
    for i in range(n):
        c = i % CLASSES
        rel = f"class_{c:03d}/{i:07d}_000010_000020.mp4"
        (root / "videos" / rel).touch()
        lines["train" if i % 5 else "val"].append(f"{rel} {c}\n")
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("".join(split_lines))
    return root / "train.txt", root / "val.txt"


def one(n: int) -> dict[str, float]:
    from stnet import prepare

    info = {"frames": 250, "width": 340, "height": 256, "fps": 25.0, "bytes": 1, "source_bytes": 1}

    def stub(todo, settings, workers, progress, total=0):  # type: ignore[no-untyped-def]
        return {task.dest: ("ok", dict(info)) for task in todo}, None

    prepare._run_jobs = stub  # type: ignore[assignment]
    settings = prepare.Settings(256)
    with tempfile.TemporaryDirectory(prefix="stnet-plan-") as tmp:
        root = Path(tmp)
        lists = [str(p) for p in _tree(root, n)]
        base = _rss_mb()
        start = time.perf_counter()
        plan = prepare.plan_list(lists, root / "videos", False, None)
        plan_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare.execute(plan, root / "one", settings, progress=False)
        execute_s = time.perf_counter() - start
        peak = _peak_mb() - base
        start = time.perf_counter()
        for i in range(4):
            prepare.execute(plan, root / "many", settings, progress=False, shard=(i, 4))
        shards_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare.merge(root / "many")
        merge_s = time.perf_counter() - start
        for name in ("train.txt", "val.txt"):
            assert (root / "one" / name).read_bytes() == (root / "many" / name).read_bytes()
        return {
            "entries": n,
            "plan_s": plan_s,
            "execute_s": execute_s,
            "peak_mb": peak,
            "shards_s": shards_s,
            "merge_s": merge_s,
            "report_mb": (root / "one" / "prepare_report.json").stat().st_size / 2**20,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 120_000, 240_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for n in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n} entries done", file=sys.stderr)
    header = ["entries", "plan_list", "execute (no decoding)", "peak memory", "4 shards", "merge", "report"]
    print("| " + " | ".join([*header, "× previous"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    previous = None
    for r in rows:
        total = r["plan_s"] + r["execute_s"]
        ratio = f"{total / previous:.2f}" if previous else "–"
        print(
            f"| {r['entries']:,} | {r['plan_s']:.2f} s | {r['execute_s']:.2f} s | {r['peak_mb']:.0f} MB "
            f"| {r['shards_s']:.2f} s | {r['merge_s']:.2f} s | {r['report_mb']:.1f} MB | {ratio} |"
        )
        previous = total


if __name__ == "__main__":
    main()
