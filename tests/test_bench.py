"""`stnet bench`: FLOP counting is right, and the quick run produces every section and target."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from conftest import run_stnet
from stnet import bench, cli
from stnet.model import StNet, TemporalBlock


def hand_count(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward FLOPs from each conv/linear layer's shape: 2 × outputs × inputs feeding each output."""
    per_layer: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                fan_in = module.in_features
            elif isinstance(module, TemporalBlock):  # its (3,1,1) conv1 runs inside its forward
                fan_in = module.conv1.in_channels * math.prod(module.conv1.kernel_size)
            else:
                fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            per_layer[name] = per_layer.get(name, 0) + 2 * output.numel() * fan_in

        return count

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear | TemporalBlock)
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return sum(per_layer.values()), per_layer


def test_flops_of_one_convolution_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8 output channels × 16×16 positions × (3 channels × 3×3 taps) multiply-adds, 2 FLOPs each
    assert bench.count_flops(conv, torch.randn(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 3 * 9 == 110_592
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert bench.count_flops(depthwise, torch.randn(2, 8, 16, 16)) == 2 * 2 * 8 * 16 * 16 * 9


def test_flops_of_a_small_stnet_match_its_layer_shapes():
    torch.manual_seed(0)
    model = StNet(num_classes=5, T=3, N=2, depth=18)
    x = torch.randn(2, 3, 6, 32, 32)
    expected, per_layer = hand_count(model, x)
    assert bench.count_flops(model, x) == expected
    # Training: backward computes the input and the weight gradient of every layer (2× forward),
    # except the first convolution's input gradient: the clip needs none.
    assert bench.count_flops(model, x, train=True) == 3 * expected - per_layer["conv1"]


def test_stnet_r50_does_about_40_percent_more_work_than_the_tsn_baseline():
    plan = bench.FULL_WORKLOAD
    stnet = bench.count_flops(bench.build("stnet", plan), bench.example("stnet", plan, 1, 112))
    tsn = bench.count_flops(bench.build("tsn", plan), bench.example("tsn", plan, 1, 112))
    # ResNet-50 at 112² is ~2.15 GFLOP per frame (a quarter of its 8.2 at 224², plus the stem edges).
    assert 14.0e9 < tsn < 16.0e9
    # The two temporal Conv3d add 2 × 2.16 GFLOP (29 %) and the 15-channel stem 1.65 GFLOP (11 %).
    assert 1.35 < stnet / tsn < 1.45


def test_tsn_baseline_averages_per_frame_logits():
    torch.manual_seed(0)
    tsn = bench.TSN(num_classes=4, depth=18).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        clip = tsn(x)
        frames = torch.stack([tsn(x[:, t : t + 1]) for t in range(3)], dim=1)
    torch.testing.assert_close(clip, frames.mean(dim=1))


def test_fitted_exponent():
    xs = [4, 7, 14, 25]
    assert bench.fitted_exponent(xs, [3 * x**2 for x in xs]) == pytest.approx(2.0)
    assert bench.fitted_exponent(xs, [0.5 * x for x in xs]) == pytest.approx(1.0)


@pytest.mark.slow
def test_quick_bench_measures_every_section(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    # its own process, as users run it: in the suite's process, after test_backends' OpenVINO runs,
    # the bench's compile and OpenVINO rows crashed (SIGSEGV) on the no-AVX-512 EPYC
    done = run_stnet("bench", "--quick", "--json", str(out_json), "--markdown", str(out_md), timeout=900)
    result = json.loads(out_json.read_text())
    assert result["ceiling"]["fp32"] > 0 and result["ceiling"]["bf16"] > 0
    cases = result["cases"]
    train = {(c["model"], c["variant"]) for c in cases if c["section"] == "train"}
    default = bench.training_variant(torch.device("cpu"))  # bf16 + channels_last only where bf16 is native
    assert result["training"]["variant"] == default
    assert train == {("StNet-R18", "fp32"), ("StNet-R18", default), ("TSN ResNet-18", "fp32")}
    infer = {(c["model"], c["variant"], c["batch"]) for c in cases if c["section"] == "infer"}
    assert ("StNet-R18", bench.ONNX, 2) in infer and ("TSN ResNet-18", "fp32", 1) in infer
    assert ("StNet-R18", bench.ONNX_INT8, 2) in infer
    for precision in ("fp32", "int8"):  # the openvino extra is installed by make; bf16 only on bf16 CPUs
        assert ("StNet-R18", bench.OPENVINO[precision], 2) in infer
    assert result["deployment"]["variant"] in {v for _m, v, _b in infer}
    for c in cases:
        assert c["clips_per_s"] > 0 and c["gflops"] == pytest.approx(c["gflop_per_clip"] * c["clips_per_s"])
        if c["section"] == "train":
            assert 0.1 < c["peak_gib"] < 24
    assert result["data"]["worker"]["clips_per_s"] > 0
    assert 0 <= result["data"]["epoch"]["data_wait"] < 1
    assert [r["T"] for r in result["scaling"]["by_T"]] == [2, 4]
    assert math.isfinite(result["scaling"]["exponent_pixels"])
    assert len(result["targets"]) == 9  # 2 of them for the default deployment path
    assert "**Default deployment path** (`--backend auto` here)" in out_md.read_text()
    assert f"StNet training ({default}) ÷ TSN fp32" in out_md.read_text()
    report = out_md.read_text()
    assert "**Targets**" in report and "Command: `stnet bench --quick`" in report
    assert report in done.stdout


def test_unknown_section_is_a_one_line_error(capsys):
    assert cli.main(["bench", "--only", "ceiling,gpus"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "stnet: error: --only: unknown section 'gpus'; use some of ceiling,train,infer,data,scaling"


def test_one_section_alone_is_measured_and_reported(capsys):
    assert cli.main(["bench", "--quick", "--only", "scaling"]) == 0
    report = capsys.readouterr().out
    assert "**Ceiling**" in report and "**Scaling**" in report and "**Training" not in report
