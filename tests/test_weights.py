"""Weights: reference parity, ImageNet initialisation from torchvision/MindSpore files, refusals."""

import numpy as np
import pytest
import torch

from reference_recipe import reference_input, reference_logits, reference_params
from stnet import StNet, load_weights
from stnet.mindspore_ckpt import write_ckpt
from stnet.weights import WeightsError, convert_weights, inflate_conv1, read_weights, save_safetensors

MS_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def to_mindspore_names(state_dict):
    """Rename a torchvision-style ResNet state dict as the MindSpore model zoo names it."""
    out = {}
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        stem, leaf = name.rsplit(".", 1)
        is_bn = value.ndim == 1 and ("bn" in stem or stem.endswith("downsample.1"))
        leaf = MS_BN[leaf] if is_bn else leaf
        stem = stem.replace("downsample", "down_sample_layer")
        if stem == "fc":
            stem = "end_point"
        out[f"{stem}.{leaf}"] = value
    return out


def torchvision_resnet18_state_dict(seed=0):
    """A state dict shaped and named exactly like torchvision's resnet18 (3-channel conv1, 1000-way fc)."""
    g = torch.Generator().manual_seed(seed)
    model = StNet(num_classes=1000, N=1, depth=18)
    sd = {}
    for name, value in model.state_dict().items():
        if name.startswith(("temp1", "temp2", "xception")):
            continue
        if name == "fc.weight":
            value = torch.empty(1000, 512)
        sd[name] = value if value.dtype == torch.long else torch.rand(value.shape, generator=g) + 0.5
    return sd


@pytest.fixture(scope="module")
def parity_model():
    return StNet(num_classes=101, T=7, N=5, depth=50, xception="full", stem_pool="same").eval()


def run_fixture_input(model):
    with torch.no_grad():
        return model(torch.from_numpy(reference_input())).numpy()


def test_reference_parity_through_a_mindspore_ckpt(parity_model, tmp_path):
    """The reference's weights, written as a MindSpore .ckpt and read back, reproduce its logits."""
    path = tmp_path / "stnet_reference.ckpt"
    params = reference_params()
    params["moments.fc.weight"] = np.zeros((101, 1024), np.float32)  # optimizer state is ignored
    params["global_step"] = np.array([1234], np.int32)
    write_ckpt(path, params, crc=True)
    report = load_weights(parity_model, path)
    assert report.kind == "stnet" and not report.missing and not report.inflated
    assert len(report.loaded) == 301
    assert report.skipped == ["global_step", "moments.fc.weight"]
    logits = run_fixture_input(parity_model)
    np.testing.assert_allclose(logits, reference_logits(), atol=1e-3, rtol=0)
    assert np.abs(logits - reference_logits()).max() < 1e-4


def test_reference_parity_is_sensitive_to_the_stem_padding(parity_model, tmp_path):
    path = tmp_path / "ref.ckpt"
    write_ckpt(path, reference_params())
    symmetric = StNet(num_classes=101, xception="full", stem_pool="symmetric").eval()
    load_weights(symmetric, path)
    assert np.abs(run_fixture_input(symmetric) - reference_logits()).max() > 0.05


def test_depthwise_model_refuses_full_reference_weights(tmp_path):
    path = tmp_path / "ref.ckpt"
    write_ckpt(path, reference_params())
    model = StNet(num_classes=101, xception="depthwise")
    before = model.conv1.weight.clone()
    with pytest.raises(
        WeightsError,
        match=r"xception\.att_conv\.weight: file \(2048, 2048, 3, 1\) vs model \(2048, 1, 3, 1\)",
    ):
        load_weights(model, path)
    assert torch.equal(model.conv1.weight, before), "nothing may be loaded from a file that does not fit"


def test_conv1_inflation_numbers():
    w = torch.tensor([[1.0, 2.0, 6.0], [-3.0, 0.0, 0.0]]).view(2, 3, 1, 1)
    out = inflate_conv1(w, N=2)
    assert out.shape == (2, 6, 1, 1)
    np.testing.assert_allclose(out[0].flatten(), [1.5] * 6)  # mean 3 / N 2
    np.testing.assert_allclose(out[1].flatten(), [-0.5] * 6)  # mean -1 / 2
    # the total weight mass per filter is preserved
    torch.testing.assert_close(out.sum(dim=1), w.sum(dim=1) * 2 / 3 * 3 / 2)


def check_imagenet_init(model, source, report, classifier_name="fc.weight"):
    assert report.kind == "resnet"
    assert report.inflated == ["conv1.weight"]
    torch.testing.assert_close(model.conv1.weight, inflate_conv1(source["conv1.weight"], model.N))
    # every backbone tensor arrives, running statistics included
    torch.testing.assert_close(
        model.layer2[0].downsample[1].running_var, source["layer2.0.downsample.1.running_var"]
    )
    torch.testing.assert_close(model.layer4[1].bn2.running_mean, source["layer4.1.bn2.running_mean"])
    torch.testing.assert_close(model.layer3[1].conv2.weight, source["layer3.1.conv2.weight"])
    # classifier skipped, temporal parts kept at their initialisation
    assert classifier_name in report.skipped or "fc.weight" in report.skipped
    assert torch.all(model.fc.bias == 0) and model.fc.weight.shape == (7, 256)
    assert torch.all(model.temp1.bn1.weight == 1)
    assert {n.split(".")[0] for n in report.missing} == {"temp1", "temp2", "xception", "fc"}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_as_imagenet_init(tmp_path, suffix):
    source = torchvision_resnet18_state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        saved = source
        torch.save(saved, path)
    else:
        saved = {k: v for k, v in source.items() if v.dtype != torch.long}
        save_safetensors(saved, path)
    model = StNet(num_classes=7, T=3, N=4, depth=18)
    report = load_weights(model, path)
    check_imagenet_init(model, source, report)
    assert set(report.loaded) == {k for k in saved if not k.startswith("fc.")} - {"conv1.weight"}
    assert model(torch.randn(1, 3, 12, 32, 32)).shape == (1, 7)


def test_mindspore_resnet_ckpt_as_imagenet_init(tmp_path):
    source = torchvision_resnet18_state_dict(seed=1)
    path = tmp_path / "resnet_ms.ckpt"
    ms = to_mindspore_names(source)
    ms["moments.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    ms["learning_rate"] = torch.tensor(0.1)
    write_ckpt(path, ms)
    model = StNet(num_classes=7, T=3, N=4, depth=18)
    report = load_weights(model, path)
    check_imagenet_init(model, source, report)
    assert "moments.conv1.weight" in report.skipped and "learning_rate" in report.skipped


def test_our_checkpoint_dict_and_ddp_prefix(tmp_path):
    torch.manual_seed(0)
    model = StNet(num_classes=5, T=2, N=1, depth=18)
    path = tmp_path / "last.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    other = StNet(num_classes=5, T=2, N=1, depth=18)
    report = load_weights(other, path)
    assert report.kind == "stnet" and not report.missing
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_shape_mismatch_names_tensors_and_shapes(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision_resnet18_state_dict(), path)
    with pytest.raises(WeightsError, match=r"missing from the file: .*layer1\.0\.conv3\.weight") as e:
        load_weights(StNet(num_classes=7, depth=50), path)
    assert "layer1.0.conv1.weight: file (64, 64, 3, 3) vs model (64, 64, 1, 1)" in str(e.value)


def test_class_count_mismatch_and_skip_classifier(tmp_path):
    torch.manual_seed(0)
    kinetics = StNet(num_classes=400, T=2, N=1, depth=18)
    path = tmp_path / "k400.safetensors"
    save_safetensors(kinetics.state_dict(), path)
    ucf = StNet(num_classes=101, T=2, N=1, depth=18)
    with pytest.raises(
        WeightsError, match=r"fc\.weight: file \(400, 256\) vs model \(101, 256\).*skip_classifier"
    ):
        load_weights(ucf, path)
    report = load_weights(ucf, path, skip_classifier=True)
    assert report.skipped == ["fc.bias", "fc.weight"] and report.missing == ["fc.bias", "fc.weight"]
    assert torch.equal(ucf.temp2.conv1.weight, kinetics.temp2.conv1.weight)


def test_incomplete_stnet_file_is_refused(tmp_path):
    model = StNet(num_classes=3, T=2, N=1, depth=18)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.1.")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing from the file: layer4\.1\."):
        load_weights(StNet(num_classes=3, T=2, N=1, depth=18), path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"hello, I am not weights at all", "unrecognised weight file"),
        (b"PK\x03\x04garbage-zip", "could not be loaded safely"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "not a readable MindSpore checkpoint"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "w.bin"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_weights(path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="weight file not found"):
        load_weights(StNet(depth=18), tmp_path / "nope.pth")


def test_pickled_code_is_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(WeightsError, match="could not be loaded safely"):
        read_weights(path)
    assert not (tmp_path / "pwned").exists()


def test_convert_mindspore_to_safetensors_round_trip(tmp_path):
    src = tmp_path / "ref.ckpt"
    params = reference_params()
    write_ckpt(src, params)
    dst = tmp_path / "ref.safetensors"
    kind, count = convert_weights(src, dst)
    assert (kind, count) == ("stnet", 301)
    tensors, ignored = read_weights(dst)
    assert not ignored
    np.testing.assert_array_equal(
        tensors["temp1.bn1.running_var"].numpy(), params["temp1.bn1.bn2d.moving_variance"]
    )
    np.testing.assert_array_equal(
        tensors["layer1.0.downsample.0.weight"].numpy(), params["layer1.0.down_sample_layer.0.weight"]
    )
