"""Loading and converting weights: torchvision ResNets, MindSpore checkpoints, stnet's own files.

Every source is first read into one flat ``name → tensor`` dict in stnet's (torchvision-style) naming,
then checked against the model as a whole before anything is copied: a file that does not fit is
refused with the offending names and shapes, never half-loaded.

Two kinds of source are recognised from the names they hold:

* an **ImageNet ResNet** (torchvision ``resnet50-*.pth``, the MindSpore model-zoo ResNet-50 ``.ckpt``):
  every backbone conv/BN tensor is loaded, running statistics included; the ImageNet classifier is
  skipped; ``conv1`` is inflated from 3 to 3N input channels (mean over RGB, divided by N, tiled 3N
  times), and the temporal blocks, Xception head and classifier keep their fresh initialisation;
* a full **StNet** (stnet's own weights or checkpoints, a reference MindSpore StNet ``.ckpt``): every
  tensor must be present and fit.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stnet import mindspore_ckpt
from stnet.errors import OSFailure, StnetError
from stnet.fileio import atomic_write_bytes, refuse_overwriting_inputs

STNET_PREFIXES = ("temp1.", "temp2.", "xception.")
HEAD_PREFIX = "fc."

# Entries of a MindSpore training checkpoint that are optimizer or bookkeeping state, not weights.
_NON_WEIGHT = re.compile(
    r"^(moments|accum|moment1|moment2|adam_m|adam_v|scale_sense)\.|^(global_step|learning_rate|current_iterator_step|last_overflow_iterator_step|epoch_num|step_num)$"
)
_MS_SUFFIX = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unsafe_load_reason(e: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused or failed, in one clause for the user.

    Torch's own message is many lines long and advises retrying with ``weights_only=False``, which
    would run whatever code the file carries; stnet never does that, so the advice is never shown."""
    text = _ANSI.sub("", str(e))
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return (
            f"it holds pickled Python objects, not only tensors (it calls {refused.group(1)}); stnet "
            "never runs code from a file"
        )
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"it is not a plain tensor file ({_first_sentence(detail)}); stnet never runs code from a file"
    if "TorchScript archive" in text:
        return "it is a TorchScript archive (a model with code), not a weight file"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return f"{type(e).__name__}: {_first_sentence(lines[0])}" if lines else type(e).__name__


def _first_sentence(text: str) -> str:
    return text.split(". ", 1)[0].rstrip(".")


def torch_load_safely(source: str | os.PathLike | bytes, *, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors, numbers, strings and containers only: no code
    runs). Raises ``ValueError`` with :func:`unsafe_load_reason` as its message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "dispatching to torch.jit.load" before refusing it
            if isinstance(source, bytes):
                return torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:
        raise
    except Exception as e:
        raise ValueError(unsafe_load_reason(e)) from None


class WeightsError(StnetError, ValueError):
    """A weight file that cannot be read or does not fit the model; the message says which and why."""


@dataclass
class LoadReport:
    """What ``load_weights`` did with each name."""

    path: str
    kind: str  # "resnet" (ImageNet initialisation) or "stnet" (a whole model)
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the file, deliberately not used
    missing: list[str] = field(default_factory=list)  # in the model, kept at their initialisation

    def summary(self) -> str:
        lines = [
            f"weights {self.path} ({self.kind}): {len(self.loaded)} tensors loaded, "
            f"{len(self.inflated)} inflated, {len(self.skipped)} skipped, "
            f"{len(self.missing)} kept at initialisation"
        ]
        if self.inflated:
            lines.append("  inflated: " + ", ".join(self.inflated))
        if self.skipped:
            lines.append("  skipped: " + _abbrev(self.skipped))
        if self.missing:
            lines.append("  initialised fresh: " + _abbrev(self.missing))
        return "\n".join(lines)


def _abbrev(names: list[str], limit: int = 12) -> str:
    more = f", … (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ----------------------------------------------------------------------------------------------------
# Reading any supported file into stnet names
# ----------------------------------------------------------------------------------------------------


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], list[str]]:
    """Read a weight file of any supported format; return ``(tensors in stnet naming, ignored names)``.

    Formats: PyTorch ``.pth``/``.pt`` (a state dict, or a checkpoint dict holding one under ``model``
    or ``state_dict``; loaded with ``weights_only=True``), ``.safetensors``, MindSpore ``.ckpt``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    raw = _read_raw(path)
    tensors: dict[str, Tensor] = {}
    ignored: list[str] = []
    for name, value in raw.items():
        new = _stnet_name(name)
        if new is None or not isinstance(value, Tensor):
            ignored.append(name)
        else:
            tensors[new] = value
    if not tensors:
        raise WeightsError(f"{path} holds no weight tensors")
    return tensors, ignored


def _read_raw(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    if not head:
        raise WeightsError(f"{path} is empty")
    if _looks_like_safetensors(head):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # the library's own exception types vary by version
            raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    if head.startswith(b"PK") or head[:1] == b"\x80":  # torch zip archive or legacy pickle
        return _read_torch(path)
    if mindspore_ckpt.is_mindspore_ckpt(path):
        try:
            return {
                k: torch.from_numpy(np.ascontiguousarray(v))
                for k, v in mindspore_ckpt.read_ckpt(path).items()
            }
        except mindspore_ckpt.MindSporeCheckpointError as e:
            raise WeightsError(str(e)) from None
    raise WeightsError(
        f"{path}: unrecognised weight file (expected a PyTorch .pth/.pt, .safetensors or MindSpore .ckpt)"
    )


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _read_torch(path: Path) -> dict[str, object]:
    try:
        obj = torch_load_safely(path)
    except ValueError as e:
        raise WeightsError(f"{path} could not be loaded safely as PyTorch weights: {e}") from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    prefix = "module."  # saved from DistributedDataParallel
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in obj.items()}


def _stnet_name(name: str) -> str | None:
    """Map a torchvision or MindSpore name to stnet's; None for optimizer/bookkeeping entries."""
    if _NON_WEIGHT.search(name):
        return None
    name = name.replace(".down_sample_layer.", ".downsample.").replace(".bn2d.", ".")
    if name.startswith("end_point."):  # the MindSpore ResNet's classifier
        name = "fc." + name[len("end_point.") :]
    stem, _, leaf = name.rpartition(".")
    return f"{stem}.{_MS_SUFFIX.get(leaf, leaf)}" if stem else name


# ----------------------------------------------------------------------------------------------------
# Fitting a state dict to a model
# ----------------------------------------------------------------------------------------------------


def inflate_conv1(weight: Tensor, N: int) -> Tensor:
    """ImageNet conv1 (out, 3, k, k) → StNet conv1 (out, 3N, k, k): mean over RGB, / N, tiled 3N times.

    For a clip of N identical frames the inflated filter answers as the colour-averaged 2D filter would.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise WeightsError(f"conv1.weight to inflate must be (out, 3, k, k), got {tuple(weight.shape)}")
    return (weight.float().mean(dim=1, keepdim=True) / N).repeat(1, 3 * N, 1, 1).to(weight.dtype)


def source_kind(tensors: Mapping[str, Tensor]) -> str:
    """``stnet`` if the tensors include StNet's temporal parts, else ``resnet`` (an ImageNet backbone)."""
    return "stnet" if any(k.startswith(STNET_PREFIXES) for k in tensors) else "resnet"


def fit_state_dict(
    model: nn.Module, tensors: Mapping[str, Tensor], *, skip_classifier: bool = False, path: str = "weights"
) -> tuple[dict[str, Tensor], LoadReport]:
    """Check ``tensors`` against ``model`` and return what to load plus the report; raise on any misfit."""
    kind = source_kind(tensors)
    report = LoadReport(path=path, kind=kind)
    target = model.state_dict()
    tensors = dict(tensors)
    if kind == "resnet" or skip_classifier:
        report.skipped += sorted(k for k in tensors if k.startswith(HEAD_PREFIX))
        tensors = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    conv1 = tensors.get("conv1.weight")
    want = target["conv1.weight"].shape
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3 and want[1] != 3:
        tensors["conv1.weight"] = inflate_conv1(conv1, want[1] // 3)
        report.inflated.append("conv1.weight")

    extra = sorted(k for k in tensors if k not in target)
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in tensors.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    fresh_ok = (
        (*STNET_PREFIXES, HEAD_PREFIX) if kind == "resnet" else ((HEAD_PREFIX,) if skip_classifier else ())
    )
    # BatchNorm step counters are bookkeeping: loaded when present, never required
    absent = sorted(k for k in target if k not in tensors and not k.endswith("num_batches_tracked"))
    missing_required = [k for k in absent if not k.startswith(fresh_ok)]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:8]))
    if extra:
        problems.append(f"{len(extra)} name(s) the model does not have: {_abbrev(extra, 8)}")
    if missing_required:
        problems.append(
            f"{len(missing_required)} name(s) missing from the file: {_abbrev(missing_required, 8)}"
        )
    if problems:
        arch = getattr(model, "depth", "?")
        hint = _mismatch_hint(mismatched)
        raise WeightsError(
            f"{path} does not fit this model (StNet depth {arch}, {kind} weights): "
            + " | ".join(problems)
            + hint
        )
    report.loaded = sorted(k for k in tensors if k in target and k not in report.inflated)
    report.missing = absent
    fitted = {k: v.to(dtype=target[k].dtype) for k, v in tensors.items() if k in target}
    return fitted, report


def _mismatch_hint(mismatched: list[str]) -> str:
    if any(m.startswith("fc.") for m in mismatched):
        return " (a classifier for another number of classes: skip_classifier=True fine-tunes from it)"
    if any(m.startswith("xception.att_conv") for m in mismatched):
        return " (the Xception head differs: try xception='full' for reference checkpoints)"
    if any(m.startswith("conv1.") for m in mismatched):
        return " (conv1 channels differ: N of the model and of the weights must agree)"
    return ""


def load_weights(model: nn.Module, path: str | os.PathLike, *, skip_classifier: bool = False) -> LoadReport:
    """Load ImageNet-ResNet or whole-StNet weights from any supported file into ``model``.

    Returns a :class:`LoadReport`; raises :class:`WeightsError` (with names and shapes) if they do not fit.
    """
    tensors, ignored = read_weights(path)
    fitted, report = fit_state_dict(model, tensors, skip_classifier=skip_classifier, path=str(path))
    with torch.no_grad():
        model.load_state_dict(fitted, strict=False)
    report.skipped = sorted(report.skipped + ignored)
    return report


def convert_weights(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[str, int]:
    """Convert any supported weight file to stnet-named ``.safetensors``; returns ``(kind, count)``.

    Names are mapped (MindSpore → torchvision style), optimizer and bookkeeping entries dropped; no
    inflation happens here (it depends on the model's N and is done when loading). A training
    checkpoint's config and class names (or a converted file's) travel along as the metadata
    ``stnet_config``/``stnet_classes`` (JSON), so the file is used without ``--config`` flags
    (:func:`read_described_weights`). ``dst`` must not be ``src``: the user's file is never replaced.
    """
    refuse_overwriting_inputs([dst], [src])
    tensors, _ = read_weights(src)
    kind = source_kind(tensors)
    metadata: dict[str, object] = {"stnet_kind": kind, "converted_from": Path(src).name}
    description = _source_description(Path(src))
    if description is not None and kind == "stnet":
        metadata[CONFIG_META] = description["config"]
        if description.get("classes") is not None:
            metadata[CLASSES_META] = description["classes"]
    save_safetensors(tensors, dst, metadata=metadata)
    return kind, len(tensors)


CONFIG_META, CLASSES_META = "stnet_config", "stnet_classes"


def _source_description(path: Path) -> dict | None:
    """The config and class names a weight file carries: a training checkpoint's own, or a converted
    safetensors file's metadata; None for files without one (ResNets, MindSpore checkpoints)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_safetensors(head):
        return read_described_weights(path, tensors=False)
    if not head.startswith(b"PK"):
        return None
    try:
        obj = torch_load_safely(path, mmap=True)
    except ValueError:
        return None  # read_weights has already accepted the file; a plain state dict has no config
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        classes = obj.get("classes")
        return {"config": dict(obj["config"]), "classes": list(classes) if classes is not None else None}
    return None


def read_described_weights(path: str | os.PathLike, *, tensors: bool = True) -> dict | None:
    """A converted ``.safetensors`` that carries its description, shaped like a training checkpoint:
    ``{"config": dict, "classes": list[str] | None, "model": tensors}`` (``model`` only with
    ``tensors``). None for any other file, or a safetensors file without ``stnet_config``.

    The metadata is JSON text parsed with :mod:`json` (never executed); a malformed value is a
    :class:`WeightsError`, and the config's values are validated like a config file's where it is used.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if not _looks_like_safetensors(f.read(16)):
                return None
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # the library's own exception types vary by version
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    if CONFIG_META not in metadata:
        return None
    config = _json_meta(path, metadata, CONFIG_META)
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise WeightsError(f"{path}: the {CONFIG_META} metadata is not a JSON object of settings")
    classes = _json_meta(path, metadata, CLASSES_META) if CLASSES_META in metadata else None
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise WeightsError(f"{path}: the {CLASSES_META} metadata is not a JSON list of class names")
    from stnet.config import WEIGHT_KEYS

    absent = [k for k in WEIGHT_KEYS if k not in config]
    if absent:
        raise WeightsError(f"{path}: the {CONFIG_META} metadata does not give {', '.join(absent)}")
    described: dict = {"config": config, "classes": classes}
    if tensors:
        described["model"] = _fit_description(path, config)
    return described


def _fit_description(path: Path, config: Mapping[str, object]) -> dict[str, Tensor]:
    """The file's tensors, checked to fit the model its description names (a one-line
    :class:`WeightsError` naming the misfit, not the model's own error when they are loaded)."""
    from stnet.config import load_config
    from stnet.model import build_model

    model = build_model(load_config(None, [], base=config))  # bad values: a one-line ConfigError
    tensors, _ = read_weights(path)
    fit_state_dict(model, tensors, path=f"{path} (as its {CONFIG_META} metadata describes it)")
    return tensors


def _json_meta(path: Path, metadata: Mapping[str, str], key: str) -> object:
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: the {key} metadata is not valid JSON ({e})") from None


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike, metadata: Mapping[str, object] | None = None
) -> None:
    """Write tensors (contiguous CPU copies) to ``path`` atomically, with string metadata.

    The file is serialised in memory and written by :func:`~stnet.fileio.atomic_write_bytes`, so a
    full disk or a read-only folder is one :class:`~stnet.errors.OSFailure` naming ``path`` (the
    safetensors writer reports those as its own exception type)."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data, metadata=meta))
