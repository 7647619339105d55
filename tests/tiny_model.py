"""Test helper: an untrained tiny StNet (the :data:`conftest.TINY_RUN` shape) saved as whole-StNet
weights, with its class names, and its in-process :class:`stnet.runners.Runner`."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import TINY_RUN, tiny_argv

CLASSES = ("red", "green", "blue")


def tiny_weights(folder: Path, **changes: object) -> tuple[Path, Path, list[str]]:
    """``(weights.safetensors, classes.txt, the flags that describe the model)`` in ``folder``."""
    from safetensors.torch import save_file

    from stnet.config import load_config
    from stnet.model import build_model

    flags = [*tiny_argv(**{k: None for k in ("batch_size", "workers")}, **changes)]
    torch.manual_seed(0)
    model = build_model(load_config(None, flags))
    path = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    names = folder / "classes.txt"
    names.write_text("".join(f"{c}\n" for c in CLASSES[: TINY_RUN["class_num"]]))
    return path, names, flags


def tiny_runner(folder: Path, **changes: object):
    from stnet.checkpoint import checkpoint_config
    from stnet.inference import checkpoint_runner

    path, names, flags = tiny_weights(folder, **changes)
    return checkpoint_runner(path, checkpoint_config(path, None, flags), names, log=lambda _m: None)
