"""StNet: local and global spatial-temporal modelling (He et al., AAAI 2019).

A video clip arrives as ``(B, T, 3N, H, W)``: T segments, each a "super-image" of N consecutive RGB
frames stacked along the channel axis, frame-major with RGB interleaved (channel ``3k + c`` is colour c
of frame k). A 2D ResNet sees the ``B*T`` super-images (local spatial-temporal modelling);
temporal blocks after ``layer2`` and ``layer3`` and a temporal Xception head over the T segment features
model the global structure; a max over segments and a linear layer give the logits.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.downsample.0``, ...), so ImageNet
weights load by name; the StNet parts are ``temp1``, ``temp2``, ``xception`` and ``fc`` as in the
MindSpore reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # config.py imports this module
    from stnet.config import Config

XceptionKind = Literal["depthwise", "full"]
StemPool = Literal["symmetric", "same"]

DEPTHS = (18, 34, 50, 101, 152)
_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 → 3x3 (carries the stride, ResNet v1.5) → 1x1, as torchvision and the reference."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _init_backbone(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out) convolutions, BatchNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def _init_temporal(module: nn.Module) -> None:
    """The reference's initialisation of its temporal parts: He-uniform (fan-in) convolutions with zero
    bias, BatchNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


class TemporalBlock(nn.Module):
    """Conv3d (3,1,1) with bias → ReLU → BatchNorm3d → + identity, over the T segments.

    The odd order (ReLU before BN, no ReLU after the sum) is what the paper's Paddle code and the
    MindSpore reference do; it is kept so their weights mean the same thing here.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm3d(channels)

    def reset_parameters(self) -> None:
        """He-uniform convolution with zero bias, BatchNorm (1, 0), as the reference (StNet calls this)."""
        _init_temporal(self)

    def forward(self, x: Tensor, segments: int) -> Tensor:
        bt, c, h, w = x.shape
        b = bt // segments
        # The (3,1,1) Conv3d runs as the identical (3,1) Conv2d over (B, C, T, H*W) with the same weight:
        # oneDNN's bf16 Conv3d weight gradient can return inf/NaN on AVX-512 BF16 CPUs without AMX.
        x4 = x.view(b, segments, c, h, w).transpose(1, 2).reshape(b, c, segments, h * w)
        y = F.conv2d(x4, self.conv1.weight.squeeze(-1), self.conv1.bias, padding=(1, 0))
        y = self.bn1(self.relu(y).reshape(b, c, segments, h, w)) + x4.reshape(b, c, segments, h, w)
        return y.transpose(1, 2).reshape(bt, c, h, w)


class TemporalXception(nn.Module):
    """The temporal Xception head over the sequence of T segment features, laid out ``(B, C, T, 1)``.

    ``depthwise`` (the paper and Paddle) makes the two (3,1) temporal convolutions depthwise;
    ``full`` (the MindSpore reference) makes them dense, adding ~15.7 M parameters at ResNet-50 width.
    """

    def __init__(self, in_channels: int, kind: XceptionKind = "depthwise"):
        super().__init__()
        if kind not in ("depthwise", "full"):
            raise ValueError(f"xception must be 'depthwise' or 'full', not {kind!r}")
        mid = in_channels // 2
        self.out_channels = mid
        self.bn1 = nn.BatchNorm2d(in_channels)
        groups_in, groups_mid = (in_channels, mid) if kind == "depthwise" else (1, 1)
        self.att_conv = nn.Conv2d(in_channels, in_channels, (3, 1), padding=(1, 0), groups=groups_in)
        self.att_2 = nn.Conv2d(in_channels, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.att_1 = nn.Conv2d(mid, mid, (3, 1), padding=(1, 0), groups=groups_mid)
        self.att1_2 = nn.Conv2d(mid, mid, 1)
        self.dw = nn.Conv2d(in_channels, mid, 1)
        self.bn3 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)

    def reset_parameters(self) -> None:
        """He-uniform convolutions with zero bias, BatchNorm (1, 0), as the reference (StNet calls this)."""
        _init_temporal(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(x)
        a = self.att_2(self.att_conv(x))
        a = self.att1_2(self.att_1(self.relu(self.bn2(a))))
        return self.relu(self.bn3(a + self.dw(x)))


class StNet(nn.Module):
    """StNet over a ResNet backbone. Input ``(B, T, 3N, H, W)``, output logits ``(B, num_classes)``.

    T and the spatial size are read from the input, so a model trained at T=7, 112x112 also runs at
    T=25, 256x256 (Paddle's test protocol).
    """

    def __init__(
        self,
        num_classes: int = 400,
        T: int = 7,
        N: int = 5,
        depth: int = 50,
        xception: XceptionKind = "depthwise",
        stem_pool: StemPool = "symmetric",
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth not in _STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {list(DEPTHS)}, not {depth!r}")
        if stem_pool not in ("symmetric", "same"):
            raise ValueError(f"stem_pool must be 'symmetric' or 'same', not {stem_pool!r}")
        for name, value in (("num_classes", num_classes), ("T", T), ("N", N)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.num_classes, self.T, self.N, self.depth = num_classes, T, N, depth
        self.xception_kind, self.stem_pool = xception, stem_pool
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if depth < 50 else Bottleneck
        layers = _STAGE_BLOCKS[depth]

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3 * N, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1 if stem_pool == "symmetric" else 0)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.temp1 = TemporalBlock(128 * block.expansion)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.temp2 = TemporalBlock(256 * block.expansion)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.num_features = 512 * block.expansion
        self.xception = TemporalXception(self.num_features, xception)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.xception.out_channels, num_classes)
        self.reset_parameters()

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        modules += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def reset_parameters(self) -> None:
        """Initialise each part by its type, in registration order: the temporal parts by their own
        ``reset_parameters``, the backbone as torchvision's ResNet (normally overwritten by ImageNet
        weights), the classifier U(±1/sqrt(fan_in)) with zero bias."""
        for child in self.children():
            if isinstance(child, TemporalBlock | TemporalXception):
                child.reset_parameters()
            elif isinstance(child, nn.Linear):
                bound = 1.0 / math.sqrt(child.in_features)
                nn.init.uniform_(child.weight, -bound, bound)
                nn.init.zeros_(child.bias)
            else:
                _init_backbone(child)

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError that says what is wrong unless ``x`` is ``(B, T, 3N, H, W)``."""
        expected = f"(batch, T, 3N={3 * self.N}, height, width)"
        if x.ndim != 5:
            raise ValueError(
                f"StNet expects a 5-D input {expected}, frame-major with RGB interleaved; "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] != 3 * self.N:
            hint = ""
            if x.shape[1] == 3:
                hint = " (this looks colour-major (B, 3, T*N, H, W): permute/reshape to (B, T, 3N, H, W))"
            raise ValueError(
                f"StNet with N={self.N} expects {expected}; got shape {tuple(x.shape)}: "
                f"dimension 2 has {x.shape[2]} channels, not {3 * self.N}{hint}"
            )

    def _stem_pool(self, x: Tensor) -> Tensor:
        if self.stem_pool == "same":
            # TF "SAME" padding (the MindSpore reference): pad after more than before when uneven.
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads, value=float("-inf"))
        return self.maxpool(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone and temporal blocks: ``(B, T, 3N, H, W)`` → per-segment features ``(B, C, T)``."""
        self.check_input(x)
        b, t = x.shape[:2]
        x = x.reshape(b * t, *x.shape[2:])
        x = self._stem_pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.temp1(self.layer2(x), t)
        x = self.temp2(self.layer3(x), t)
        x = self.layer4(x)
        x = x.mean(dim=(2, 3))  # global average pool per segment
        return x.view(b, t, -1).transpose(1, 2)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Temporal Xception, max over segments and the classifier: ``(B, C, T)`` → ``(B, classes)``.

        With ``pre_logits=True`` returns the clip embedding ``(B, C/2)`` instead of the logits.
        """
        x = self.xception(features.unsqueeze(-1))  # (B, C/2, T, 1)
        x = x.squeeze(-1).amax(dim=2)
        if pre_logits:
            return x
        return self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(cfg: Config) -> StNet:
    """The StNet a config describes (its model keys; ``xception: full, stem_pool: same`` is the MindSpore
    reference exactly)."""
    return StNet(**cfg.model_kwargs())


def count_parameters(model: nn.Module, prefixes: Sequence[str] = ()) -> int:
    """Trainable parameters, optionally only those whose name starts with one of ``prefixes``."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and (not prefixes or n.startswith(tuple(prefixes)))
    )


def summary_table(model: StNet) -> str:
    """Trainable parameters per block, as printed by ``stnet config --model-summary``."""
    blocks = [("stem (conv1, bn1)", ("conv1.", "bn1."))] + [
        (name, (name + ".",))
        for name in ("layer1", "layer2", "temp1", "layer3", "temp2", "layer4", "xception", "fc")
    ]
    title = (
        f"StNet-R{model.depth} (xception={model.xception_kind}, stem_pool={model.stem_pool}), "
        f"T={model.T} N={model.N}, {model.num_classes} classes, input (B, {model.T}, {3 * model.N}, H, W)"
    )
    rows = [title, f"{'block':<20}{'parameters':>14}"]
    rows += [f"{name:<20}{count_parameters(model, prefixes):>14,}" for name, prefixes in blocks]
    total = count_parameters(model)
    rows.append(f"{'total':<20}{total:>14,}  ({total / 1e6:.2f} M)")
    return "\n".join(rows)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 2D conv weights channels-last (and the temporal Conv3d weights channels-last-3d), in place.

    ``model.to(memory_format=torch.channels_last)`` cannot do this: it refuses StNet's 5-D weights.
    """
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
        elif p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return model


class FrozenCompiled(nn.Module):
    """``torch.compile`` for inference with weight freezing: the weights become constants, so inductor
    folds BatchNorm into the convolutions and pre-packs them for oneDNN. On CPUs with AMX this doubles
    bf16 inference over eager (docs/benchmarks.md). Only for a model whose weights no longer change;
    each new input shape compiles again (static shapes: dynamic ones failed on StNet in torch 2.13).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.compiled = torch.compile(model, dynamic=False)

    def forward(self, x: Tensor) -> Tensor:
        import torch._inductor.config as inductor_config

        with torch.no_grad(), inductor_config.patch(freezing=True):
            return self.compiled(x)
