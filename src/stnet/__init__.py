"""stnet: StNet video action recognition in PyTorch.

>>> import stnet, torch
>>> model = stnet.StNet(num_classes=101, T=7, N=5, depth=50)    # or stnet.build_model(config)
>>> report = stnet.load_weights(model, "resnet50-0676ba61.pth")   # ImageNet init, conv1 inflated
>>> logits = model(torch.randn(2, 7, 15, 112, 112))               # (B, T, 3N, H, W) → (2, 101)
"""

__version__ = "0.1.0"

from stnet.config import Config, ConfigError, load_config
from stnet.model import StNet, build_model
from stnet.weights import LoadReport, WeightsError, convert_weights, load_weights

__all__ = [
    "Config",
    "ConfigError",
    "LoadReport",
    "StNet",
    "WeightsError",
    "__version__",
    "build_model",
    "convert_weights",
    "load_config",
    "load_weights",
]
