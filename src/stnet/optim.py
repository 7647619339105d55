"""The optimiser and the learning-rate schedule, both explicit and epoch-based (the reference's per-step
compounding decay and its hidden drops at epochs 20 and 40 replaced by one stated schedule)."""

from __future__ import annotations

import math

import torch
from torch import nn

from stnet.config import Config


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: BatchNorm weights and biases without weight decay, everything else with it.

    As the reference (MindSpore's default decay filter skips ``gamma``/``beta``), conv and fc biases
    *are* decayed.
    """
    no_decay, decay = [], []
    for module in model.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm)
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (no_decay if is_bn else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def global_batch(cfg: Config, world_size: int = 1) -> int:
    """Clips per optimizer step over all processes: batch × accumulation steps × processes."""
    return cfg.batch_size * cfg.accumulate_steps * world_size


def base_lr(cfg: Config, world_size: int = 1) -> float:
    """The lr of this run: ``lr`` × global batch / ``base_batch`` when the config records the global
    batch its lr was tuned for (``base_batch``) and ``scale_lr`` is on; else ``lr`` as given."""
    if not (cfg.scale_lr and cfg.base_batch):
        return cfg.lr
    return cfg.lr * global_batch(cfg, world_size) / cfg.base_batch


def lr_line(cfg: Config, world_size: int = 1) -> str:
    """How the run's lr came about, for the start-up log: ``lr 0.01 × (16 / 128) = 0.00125 for global
    batch 16``."""
    batch = global_batch(cfg, world_size)
    if cfg.scale_lr and cfg.base_batch:
        scaled = base_lr(cfg, world_size)
        return f"lr {cfg.lr:g} × ({batch} / {cfg.base_batch}) = {scaled:g} for global batch {batch}"
    if cfg.base_batch:
        return (
            f"lr {cfg.lr:g} as given (scale_lr false) for global batch {batch}; "
            f"the recipe's lr is for global batch {cfg.base_batch}"
        )
    return f"lr {cfg.lr:g} for global batch {batch}"


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.SGD:
    """SGD with heavy-ball (or Nesterov) momentum and coupled L2 weight decay, as the reference."""
    return torch.optim.SGD(
        parameter_groups(model, cfg.weight_decay), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov
    )


def lr_at(cfg: Config, lr: float, epoch: int, step: int = 0, steps: int = 1) -> float:
    """The learning rate for optimizer step ``step`` of ``steps`` in 0-based ``epoch``.

    Linear warm-up over ``warmup_epochs`` (reaching ``lr`` at its end, never 0); then ``multistep``
    (× ``gamma`` from each milestone epoch on: milestones [20, 40] give 0-based epochs 0–19 the base lr,
    20–39 ×0.1 and 40– ×0.01, i.e. the drop comes *after* the 20th epoch), ``cosine`` (from ``lr`` to 0
    at the end of training, per step) or ``constant``.
    """
    done = epoch + (step + 1) / steps  # training progress once this step is taken, in epochs
    if done <= cfg.warmup_epochs:
        return lr * done / cfg.warmup_epochs
    if cfg.lr_schedule == "multistep":
        return lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    if cfg.lr_schedule == "cosine":
        span = cfg.num_epochs - cfg.warmup_epochs
        return lr * 0.5 * (1 + math.cos(math.pi * max(epoch + step / steps - cfg.warmup_epochs, 0) / span))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value
