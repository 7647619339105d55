"""The deterministic parameter/input recipe of tests/fixtures/README.md (mindspore_stnet_r50_112)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "fixtures" / "mindspore_stnet_r50_112"


def uniform(stream: int, n: int) -> np.ndarray:
    """n floats in [0, 1) from a splitmix64-style hash of (index, stream), as the fixture README says."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = (
            i * np.uint64(0x9E3779B97F4A7C15)
            + np.uint64(stream) * np.uint64(0xD1B54A32D192ED03)
            + np.uint64(1)
        )
        z = z ^ (z >> np.uint64(30))
        z = z * np.uint64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> np.uint64(27))
        z = z * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def _value(name: str, shape: list[int], u: np.ndarray) -> np.ndarray:
    if name.endswith("moving_variance"):
        v = 0.5 + u
    elif name.endswith("moving_mean") or name.endswith("beta"):
        v = 0.2 * u - 0.1
    elif name.endswith("gamma"):
        v = 0.8 + 0.4 * u
    elif name.endswith("bias"):
        v = 0.02 * u - 0.01
    elif name.endswith("weight"):
        fan_in = math.prod(shape[1:])
        v = (2 * u - 1) * math.sqrt(3 / fan_in)
    else:
        raise ValueError(f"no recipe for {name}")
    return v.astype(np.float32).reshape(shape)


def reference_params() -> dict[str, np.ndarray]:
    """The 301 MindSpore-named parameters of the fixture, in the reference's order."""
    spec = json.loads((FIXTURE / "params.json").read_text())
    out = {}
    for p in spec["params"]:
        n = math.prod(p["shape"])
        out[p["name"]] = _value(p["name"], p["shape"], uniform(p["stream"], n))
    return out


def reference_input() -> np.ndarray:
    spec = json.loads((FIXTURE / "params.json").read_text())
    b, t, n, s = spec["batch"], spec["T"], spec["N"], spec["size"]
    count = b * t * 3 * n * s * s
    x = 2 * (2 * uniform(spec["input_stream"], count) - 1)
    return x.astype(np.float32).reshape(b, t, 3 * n, s, s)


def reference_logits() -> np.ndarray:
    return np.load(FIXTURE / "logits.npy")
