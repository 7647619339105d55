"""Loader workers hand over uint8 clips; the loops normalise them on the device (issue 17 §3).

Real decoded videos: the normalised uint8 batches must equal what the float pipeline made on the CPU,
a training step must not change, and the host-to-device copy must be the uint8 tensor, non-blocking.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.data import Subset

from stnet.config import Config
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.distributed import DistInfo
from stnet.engine import RunState, evaluate, train_one_epoch
from stnet.loader import ClipLoader, build_loader, to_model_input
from stnet.model import build_model
from stnet.optim import build_optimizer
from stnet.runtime import autocast
from stnet.transforms import Normalise
from videos import write_video

CPU = torch.device("cpu")


def _config(**changes) -> Config:
    values = dict(depth=18, T=2, N=2, target_size=32, short_size=36, dataset_type="kinetics400")
    values.update(class_num=3, batch_size=3, workers=0, precision="fp32", channels_last=False, lr=0.1)
    return Config(**{**values, **changes})


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    folder = tmp_path_factory.mktemp("device_input")
    return [Sample(write_video(folder / f"v{i}.mp4", 16 + 4 * i), i % 3) for i in range(6)]


def _dataset(videos: list[Sample], split: str, **kwargs) -> VideoClipDataset:
    return VideoClipDataset(videos, ClipSpec.from_config(_config()), split, seed=3, **kwargs)


@pytest.mark.parametrize("split", ["train", "val"])
def test_normalised_uint8_clips_equal_the_float_pipeline(videos: list[Sample], split: str) -> None:
    test_views = (2, 3) if split == "val" else None
    floats = _dataset(videos, split, test_views=test_views)
    pixels = floats.as_uint8()
    normalise = Normalise.from_spec(floats.spec)
    for epoch in (0, 1):
        floats.set_epoch(epoch)
        pixels.set_epoch(epoch)
        for i in range(len(videos)):
            (x8, y8), (xf, yf) = pixels[i], floats[i]
            assert x8.dtype == torch.uint8 and xf.dtype == torch.float32 and y8 == yf
            assert x8.shape == xf.shape and x8.element_size() * 4 == xf.element_size()
            assert torch.equal(normalise(x8), xf)  # the same float32 operations: bit for bit
    assert not floats.uint8  # as_uint8 copies; the float dataset stays float


def test_loader_batches_are_uint8_and_normalise_on_the_device(videos: list[Sample]) -> None:
    cfg = _config()
    train = _dataset(videos, "train")
    loader = build_loader(train, cfg, DistInfo(), CPU, train=True)
    assert isinstance(loader, ClipLoader) and loader.normalise == Normalise.from_spec(train.spec)
    reference = torch.utils.data.DataLoader(Subset(train, range(len(train))), batch_size=3)  # float clips
    order = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == 2 and all(x.dtype == torch.uint8 for x, _ in batches)
    for k, (x, _) in enumerate(batches):
        expected = torch.stack([train[j][0] for j in order[3 * k : 3 * k + 3]])
        assert torch.equal(to_model_input(x, CPU, loader.normalise), expected)
    assert next(iter(reference))[0].dtype == torch.float32
    val = build_loader(_dataset(videos, "val"), cfg, DistInfo(), CPU, train=False)
    assert all(b.views.dtype == torch.uint8 for b in val)


def test_the_device_copy_is_the_uint8_batch_without_blocking() -> None:
    class Copies(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[torch.dtype, bool]] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.Tensor.to:
                self.calls.append((args[0].dtype, bool(kwargs.get("non_blocking"))))
            return func(*args, **kwargs)

    x = torch.randint(0, 256, (2, 2, 6, 8, 8), dtype=torch.uint8)
    normalise = Normalise((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    with Copies() as copies:
        out = to_model_input(x, CPU, normalise)
    assert copies.calls[0] == (torch.uint8, True)  # what crosses to the device: 1 byte per value
    assert out.dtype == torch.float32 and out.shape == x.shape
    floats = torch.randn(2, 2, 6, 8, 8)
    assert to_model_input(floats, CPU, None) is floats  # already normalised: moved as it is
    with pytest.raises(TypeError, match="normalisation"):
        to_model_input(x, CPU, None)


def test_cuda_loaders_pin_memory() -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.zeros(4))
    assert build_loader(data, _config(), DistInfo(), torch.device("cuda"), train=True).pin_memory
    assert not build_loader(data, _config(), DistInfo(), CPU, train=True).pin_memory


def test_a_training_step_and_evaluation_are_unchanged(videos: list[Sample]) -> None:
    """An SGD step from a uint8 batch normalised in the loop equals one from the float clips the workers
    made before; evaluation's scores are the same too."""
    cfg = _config()
    train = _dataset(videos[:3], "train")
    torch.manual_seed(0)
    model = build_model(cfg)
    twin, start = copy.deepcopy(model), copy.deepcopy(model.state_dict())

    def epoch(net: torch.nn.Module, data) -> None:
        train_one_epoch(
            net,
            build_loader(data, cfg, DistInfo(), CPU, train=True),
            build_optimizer(net, cfg, cfg.lr),
            cfg,
            RunState(),
            epoch=0,
            lr=cfg.lr,
            device=CPU,
            dist=DistInfo(),
            scaler=torch.amp.GradScaler("cpu", enabled=False),
            amp=autocast(CPU, None),
        )

    epoch(model, train)  # uint8 through the loader, normalised in the loop
    epoch(twin, Subset(train, range(len(train))))  # not a VideoClipDataset: float clips, as before
    flat = [torch.cat([t.float().flatten() for t in m.state_dict().values()]) for m in (model, twin)]
    assert torch.allclose(*flat, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.conv1.weight, start["conv1.weight"])  # the steps did change it

    val = _dataset(videos[3:], "val")
    scores = [
        evaluate(model, build_loader(data, cfg, DistInfo(), CPU, train=False), device=CPU, dist=DistInfo())
        for data in (val, Subset(val, range(len(val))))
    ]
    assert scores[0] is not None and scores[1] is not None
    assert (scores[0].scores == scores[1].scores).all()
