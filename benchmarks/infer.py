"""Inference throughput and latency of StNet-R50 in every deployment path: `stnet bench --only infer`.

    .venv/bin/python benchmarks/infer.py           # ~15 minutes on 2 cores (torch.compile and exports)
    .venv/bin/python benchmarks/infer.py --quick   # a smoke run (R18, tiny inputs)

At 112 and 224 px, batch 1 and 8, T=7, N=5, 101 classes: PyTorch eager fp32, bf16 autocast +
channels-last, torch.compile of both, ONNX Runtime fp32 on a file written by `stnet export`'s code, and
the plain ResNet-50 TSN baseline; with the matmul ceiling for the GFLOP/s share. See `stnet bench`.
"""

import sys

from stnet import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--only", "infer", *sys.argv[1:]]))
