"""Run by tests/test_eval_scale.py under ``torchrun --nproc_per_node 2`` (gloo): each rank scores its
share of 10 videos x 4 views (videos 0-4 whole on one rank, as ShardSampler gives them; videos 5-9 with
their views split over the ranks; rank 1 also repeats all of video 0, as DistributedSampler padding
would), then ``gather_scores`` merges them on rank 0. Rank 0 writes its result and the old way's
(every view's logits kept, softmax per view in float64, mean per video) to the JSON file argv[1]; rank 1
writes what it got back."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from stnet.distributed import distributed_run
from stnet.engine import gather_scores
from stnet.metrics import EvalResult, ScoreAccumulator

VIDEOS, VIEWS, CLASSES = 10, 4, 6


def main(out: str) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, CLASSES, VIDEOS)
    logits = rng.normal(size=(VIDEOS, VIEWS, CLASSES)).astype(np.float32) * 3
    logits[np.arange(VIDEOS), :, labels] += 2.0  # top-1 70 %: softmax-averaging decides some
    with distributed_run(torch.device("cpu")) as dist:
        assert dist.world_size == 2
        acc = ScoreAccumulator()
        for v in range(VIDEOS):
            for k in range(VIEWS):
                mine = v % 2 == dist.rank if v < 5 else k % 2 == dist.rank
                if mine or (v == 0 and dist.rank == 1):
                    acc.add([v], logits[v, k][None], [labels[v]], view_ids=[k])
        merged = gather_scores(acc, dist)
        if dist.rank != 0:
            with open(out + f".rank{dist.rank}", "w") as f:
                json.dump({"merged": merged is not None}, f)
            return
        p = np.exp(logits.astype(np.float64) - logits.max(axis=2, keepdims=True))
        old = EvalResult.from_scores((p / p.sum(axis=2, keepdims=True)).mean(axis=1), labels)
        new = merged.result()
        report = {
            name: [getattr(r, name) for r in (old, new)] for name in ("top1", "top5", "mean_class_accuracy")
        }
        report["max_score_diff"] = float(np.abs(old.scores - new.scores).max())
        report["num_views"] = new.num_views.tolist()
        report["num_videos"] = new.num_videos
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
