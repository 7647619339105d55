"""Training-speed trials on this CPU (issue 17 §2): a profile of one step, then A/B variants.

    .venv/bin/python benchmarks/train_trials.py profile          # one bf16 + channels-last step by op, shape
    .venv/bin/python benchmarks/train_trials.py ab --repeats 5   # variants, interleaved A/B
    .venv/bin/python benchmarks/train_trials.py temporal         # the temporal convolutions alone

StNet-R50 at 112 px, T=7, N=5, batch 8, channels-last, SGD with momentum, in the precision `stnet train
--precision auto` picks on this CPU (bf16 autocast where bf16 is native: AMX or AVX-512 BF16; fp32
otherwise; `--precision` overrides): what `stnet bench` times as "bf16 + channels_last" or "fp32 +
channels_last". The A/B mode times each variant's step in turn, round after
round (so load drifts on a shared machine hit every variant alike), and prints the median and its ratio to
the baseline; it also prints each variant's loss and how far its first update of the weights (from
identical weights and inputs) is from the baseline's: ``|du - du_ref| / |du_ref|`` over all parameters
and for the parameter where it is largest (the numerics check).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stnet.model import StNet, TemporalBlock, to_channels_last
from stnet.runtime import autocast, autocast_dtype

T, N, SIZE, BATCH, CLASSES = 7, 5, 112, 8, 101
CPU = torch.device("cpu")


def inputs(batch: int = BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` clips; the first BATCH are the same whatever ``batch`` is."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, 3 * N, SIZE, SIZE, generator=g)
    y = torch.randint(0, CLASSES, (batch,), generator=g)
    return x, y


def base_model() -> StNet:
    torch.manual_seed(0)
    return to_channels_last(StNet(CLASSES, T, N, depth=50).train())


Step = Callable[[], float]
DTYPE: torch.dtype | None = None  # the autocast dtype of the run (None: fp32), set by main()


def autocast_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """Today's step: fp32 weights, autocast in DTYPE (none for fp32), channels-last (as
    engine.train_one_epoch)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        with autocast(CPU, DTYPE):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

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
        return float(loss.detach())

    return step


def compiled_blocks_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """Every residual block compiled (inductor fuses BatchNorm + ReLU + the residual add)."""
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, block in enumerate(layer):
            layer[i] = torch.compile(block, dynamic=False)
    return autocast_step(model, x, y)


def temporal_matmul_forward(block: TemporalBlock, x: torch.Tensor, segments: int) -> torch.Tensor:
    """TemporalBlock.forward with its (3,1) convolution over (T, H*W) as three shifted matmuls
    ``[B*T*H*W, C] x [C, C]`` on the channels-last activations (padding T by one on each side)."""
    bt, c, h, w = x.shape
    b = bt // segments
    x5 = x.view(b, segments, c, h, w).transpose(1, 2)  # (b, c, T, h, w)
    xt = x.permute(0, 2, 3, 1).reshape(b, segments, h * w, c)  # a view of channels-last x
    xp = F.pad(xt, (0, 0, 0, 0, 1, 1))
    weight = block.conv1.weight[:, :, :, 0, 0]  # (out, in, 3)
    y = block.conv1.bias + sum(xp[:, k : k + segments] @ weight[:, :, k].t() for k in range(3))
    y = y.permute(0, 3, 1, 2).reshape(b, c, segments, h, w)
    y = block.bn1(block.relu(y)) + x5
    return y.transpose(1, 2).reshape(bt, c, h, w)


def temporal_matmul_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    """The temporal blocks' convolutions as matmuls (:func:`temporal_matmul_forward`)."""
    for m in model.modules():
        if isinstance(m, TemporalBlock):
            m.forward = functools.partial(temporal_matmul_forward, m)  # type: ignore[method-assign]
    return autocast_step(model, x, y)


Factory = Callable[[nn.Module, torch.Tensor, torch.Tensor], Step]
# name -> (step factory, clips per step)
VARIANTS: dict[str, tuple[Factory, int]] = {
    "today": (autocast_step, BATCH),
    "bf16 params + fp32 master": (bf16_params_step, BATCH),
    "compiled residual blocks": (compiled_blocks_step, BATCH),
    "temporal convs as matmuls": (temporal_matmul_step, BATCH),
    "batch 16 per step": (autocast_step, 2 * BATCH),
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


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by their name in the plain model (torch.compile wraps a module as ``_orig_mod``)."""
    return {k.replace("_orig_mod.", ""): p for k, p in model.named_parameters()}


def ab(names: list[str], repeats: int) -> None:
    base = base_model()
    start = {k: p.detach().clone() for k, p in base.named_parameters()}
    models = {name: copy.deepcopy(base) for name in names}
    steps = {name: VARIANTS[name][0](models[name], *inputs(VARIANTS[name][1])) for name in names}
    losses = {name: steps[name]() for name in names}  # first step: compiles; numerics from equal starts
    ref = {k: p.detach().float() - start[k] for k, p in params(models[names[0]]).items()}
    for name in names:
        if VARIANTS[name][1] != VARIANTS[names[0]][1]:
            print(f"{name}: first-step loss {losses[name]:.6f} (another batch: no numerics check)")
            continue
        du = {k: p.detach().float() - start[k] for k, p in params(models[name]).items()}
        off = {k: float((du[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-30)) for k in ref}
        total = float(
            torch.cat([(du[k] - ref[k]).flatten() for k in ref]).norm()
            / torch.cat([ref[k].flatten() for k in ref]).norm()
        )
        worst = max(off, key=off.__getitem__)
        print(
            f"{name}: first-step loss {losses[name]:.6f}; update off the baseline's by {total:.1e} "
            f"(largest: {worst} {off[worst]:.1e})"
        )
    if repeats == 0:  # the numerics check alone
        return
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    ref_s = statistics.median(times[names[0]])
    print(f"\ntorch threads {torch.get_num_threads()}; {repeats} interleaved repeats")
    ref_rate = VARIANTS[names[0]][1] / ref_s
    print("| variant | clips/step | median step (s) | clips/s | vs first |")
    print("|---|---|---|---|---|")
    for name in names:
        s, batch = statistics.median(times[name]), VARIANTS[name][1]
        print(f"| {name} | {batch} | {s:.2f} | {batch / s:.2f} | {batch / s / ref_rate:.2f}× |")


def temporal(repeats: int) -> None:
    """The temporal blocks alone, forward + backward: TemporalBlock.forward (a (3,1) conv2d over
    (T, H*W)) vs :func:`temporal_matmul_forward`, at the two shapes of StNet-R50 at 112 px, batch 8."""
    for channels, side in ((512, 14), (1024, 7)):
        block = TemporalBlock(channels).train()
        x = torch.randn(BATCH * T, channels, side, side).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        ways = {
            "conv2d (today)": block.forward,
            "3 matmuls": functools.partial(temporal_matmul_forward, block),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        results = {}
        for _ in range(repeats + 1):  # the first round warms up and gives the outputs compared
            for name, forward in ways.items():
                xi = x.detach().requires_grad_()
                block.zero_grad(set_to_none=True)
                with autocast(CPU, DTYPE):
                    start = time.perf_counter()
                    y = forward(xi, T)
                y.backward(grad)
                times[name].append(time.perf_counter() - start)
                results[name] = (y.detach().float(), xi.grad, block.conv1.weight.grad)
        flop = 3 * 2 * BATCH * T * side * side * channels * channels * 3  # forward + 2x backward
        ref = results["conv2d (today)"]
        print(
            f"\n{channels} channels, {side}x{side}, T={T}, batch {BATCH}; {torch.get_num_threads()} thread(s)"
        )
        print("| way | median fwd+bwd (ms) | GFLOP/s | vs today | max rel. diff (y, dx, dw) |")
        print("|---|---|---|---|---|")
        base = statistics.median(times["conv2d (today)"][1:])
        for name in ways:
            ms = statistics.median(times[name][1:])
            diff = max(
                float((a - b).abs().max() / b.abs().max()) for a, b in zip(results[name], ref, strict=True)
            )
            print(f"| {name} | {1000 * ms:.0f} | {flop / ms / 1e9:.1f} | {base / ms:.2f}× | {diff:.1e} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["profile", "ab", "temporal"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args(argv)
    global DTYPE
    DTYPE = autocast_dtype(args.precision, CPU)
    print(f"precision: {'bf16 autocast' if DTYPE else 'fp32'}", file=sys.stderr)
    if args.variants is None:  # bf16 parameters are a bf16 trial only
        args.variants = [v for v in VARIANTS if DTYPE or "bf16" not in v]
    if args.mode == "profile":
        profile(args.rows)
    elif args.mode == "temporal":
        temporal(args.repeats)
    else:
        ab(args.variants, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
