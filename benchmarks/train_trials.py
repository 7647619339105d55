"""Training-speed trials on this CPU (issue 17 §2): a profile of one step, then A/B variants.

    .venv/bin/python benchmarks/train_trials.py profile          # one bf16 + channels-last step by op, shape
    .venv/bin/python benchmarks/train_trials.py ab --repeats 5   # variants, interleaved A/B

StNet-R50 at 112 px, T=7, N=5, batch 8, bf16 autocast + channels-last, SGD with momentum: what
`stnet bench` times as "bf16 + channels_last". The A/B mode times each variant's step in turn, round after
round (so load drifts on a shared machine hit every variant alike), and prints the median and its ratio to
the baseline; it also prints each variant's loss and the largest parameter change relative to the
baseline after one step, from identical weights and inputs (the numerics check).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stnet.model import StNet, to_channels_last

T, N, SIZE, BATCH, CLASSES = 7, 5, 112, 8, 101


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, T, 3 * N, SIZE, SIZE, generator=g)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=g)


def base_model() -> StNet:
    torch.manual_seed(0)
    return to_channels_last(StNet(CLASSES, T, N, depth=50).train())


Step = Callable[[], float]


def autocast_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """Today's step: fp32 weights, bf16 autocast, channels-last (as engine.train_one_epoch)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def bf16_params_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """bf16 parameters (no autocast casts), fp32 master weights in the optimizer, BatchNorm kept fp32."""
    master = [p for p in model.parameters()]
    bn = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    fp32 = [p.detach().clone() for p in master]
    for p in master:
        if id(p) not in bn:
            p.data = p.data.to(torch.bfloat16)
    opt = torch.optim.SGD(fp32, lr=0.01, momentum=0.9, weight_decay=1e-4)
    xb = x.to(torch.bfloat16)

    def step() -> float:
        loss = F.cross_entropy(model(xb).float(), y)
        loss.backward()
        for m, p in zip(fp32, master, strict=True):
            m.grad = p.grad.float()
            p.grad = None
        opt.step()
        with torch.no_grad():
            for m, p in zip(fp32, master, strict=True):
                p.copy_(m)
        return float(loss)

    return step


def compiled_blocks_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """Every residual block compiled (inductor fuses BatchNorm + ReLU + the residual add)."""
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, block in enumerate(layer):
            layer[i] = torch.compile(block, dynamic=False)
    return autocast_step(model, x, y)


VARIANTS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], Step]] = {
    "autocast (today)": autocast_step,
    "bf16 params + fp32 master": bf16_params_step,
    "compiled residual blocks": compiled_blocks_step,
}


def profile(rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x, y = inputs()
    step = autocast_step(base_model(), x, y)
    step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))


def ab(names: list[str], repeats: int) -> None:
    x, y = inputs()
    base = base_model()
    models = {name: copy.deepcopy(base) for name in names}
    steps = {name: VARIANTS[name](models[name], x, y) for name in names}
    losses = {name: steps[name]() for name in names}  # first step: compiles; numerics from equal starts
    ref = dict(models[names[0]].named_parameters())
    for name in names:
        worst = max(
            float((p.float() - ref[k].float()).abs().max() / ref[k].float().abs().max().clamp_min(1e-12))
            for k, p in models[name].named_parameters()
        )
        print(
            f"{name}: first-step loss {losses[name]:.6f}, largest relative parameter difference {worst:.2e}"
        )
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    ref_s = statistics.median(times[names[0]])
    print(f"\ntorch threads {torch.get_num_threads()}; batch {BATCH}, {repeats} interleaved repeats")
    print("| variant | median step (s) | clips/s | vs today |")
    print("|---|---|---|---|")
    for name in names:
        s = statistics.median(times[name])
        print(f"| {name} | {s:.2f} | {BATCH / s:.2f} | {ref_s / s:.2f}× |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["profile", "ab"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    if args.mode == "profile":
        profile(args.rows)
    else:
        ab(args.variants, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
