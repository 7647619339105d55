"""Training throughput and peak memory of StNet-R50 per precision: `stnet bench --only train`.

    .venv/bin/python benchmarks/train.py           # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/train.py --quick   # a smoke run (R18, tiny inputs)

At 112 px (batch 8) and 224 px (batch 2): fp32 eager, bf16 autocast + channels-last, torch.compile, and
the plain ResNet-50 TSN baseline, each in its own process (peak memory is its own). See `stnet bench`.
"""

import sys

from stnet import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--only", "train", *sys.argv[1:]]))
