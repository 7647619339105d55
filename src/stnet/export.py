"""``stnet export``: a trained StNet as one self-describing file that runs without stnet's training code.

Three formats:

* ``onnx`` (opset 18, fp32): for ONNX Runtime anywhere (CPU, CUDA, mobile). Batch and T are dynamic axes.
  Optionally quantized to int8 after verification (:func:`quantize_int8`, calibrated on real clips).
* ``pt2`` (``torch.export``): for PyTorch-only deployments, ``torch.export.load(path).module()``.
* ``torchscript`` (``torch.jit.trace``): for libtorch (C++) deployments. PyTorch marks TorchScript as
  deprecated, so prefer ``pt2`` unless C++ needs it.

Every file carries its :class:`~stnet.runners.ModelInfo` as JSON (class names, T, N, crop size,
resize, mean/std and the sampling recipe), so ``stnet infer``/``stnet predict`` need nothing else. An
export is verified before it is written: the file is loaded with :mod:`stnet.runners` (which holds the
description and the loaders that deployment uses), run on random clips and compared with the PyTorch
model; a difference above the tolerance writes nothing and raises :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stnet.errors import OSFailure
from stnet.fileio import atomic_write_bytes, lock_file, refuse_overwriting_inputs
from stnet.runners import (
    INPUT_NAME,
    META_FILE,
    META_KEY,
    OUTPUT_NAME,
    SUFFIXES,
    BackendChoice,
    ExportError,
    ModelInfo,
    Runner,
    quiet_torch,
    runner_from_bytes,
)

FORMATS = ("onnx", "pt2", "torchscript")
OPSET = 18


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The export format: ``fmt`` if given, else from the file's suffix (``.onnx``, ``.pt2``, ``.ts``)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ExportError(
            f"cannot tell the format of {path}: name it .onnx, .pt2 or .ts, or pass --format "
            f"{'|'.join(FORMATS)}"
        )
    return SUFFIXES[suffix]


def _example(info: ModelInfo, batch: int, T: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, T or info.T, 3 * info.N, info.size, info.size, generator=g)


def _dynamic_shapes(info: ModelInfo) -> dict[str, dict[int, Any]]:
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=4096)}
    if info.dynamic_T:
        dims[1] = torch.export.Dim("T", min=2, max=1024)
    return {"x": dims}


def _onnx_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    import onnx

    with tempfile.TemporaryDirectory() as tmp, quiet_torch():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (_example(info, 2),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=_dynamic_shapes(info),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        proto = onnx.load(str(path))  # pulls the weights in from the exporter's external-data file
    proto.doc_string = f"StNet-R{info.depth}, {info.num_classes} classes; input {INPUT_NAME} (B,T,3N,H,W)"
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, info.to_json()
    return proto.SerializeToString()


def _pt2_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    buffer = io.BytesIO()
    with quiet_torch():
        program = torch.export.export(model, (_example(info, 2),), dynamic_shapes=_dynamic_shapes(info))
        torch.export.save(program, buffer, extra_files={META_FILE: info.to_json()})
    return buffer.getvalue()


def _torchscript_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    buffer = io.BytesIO()
    with quiet_torch():
        traced = torch.jit.trace(model, _example(info, 2), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={META_FILE: info.to_json()})
    return buffer.getvalue()


def export_bytes(model: nn.Module, info: ModelInfo, fmt: str) -> bytes:
    """The serialised export of ``model`` (fp32, eval mode, on the CPU) in ``fmt``."""
    model = model.float().cpu().eval()
    build = {"onnx": _onnx_bytes, "pt2": _pt2_bytes, "torchscript": _torchscript_bytes}[fmt]
    try:
        return build(model, info)
    except ExportError:
        raise
    except Exception as e:  # the exporters raise many types; the user needs one line and the cause
        raise ExportError(f"the {fmt} exporter failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e


# ----------------------------------------------------------------------------------------------------
# Verification and the whole export
# ----------------------------------------------------------------------------------------------------


def verify(runner: Runner, model: nn.Module, tolerance: float = 1e-4) -> float:
    """The largest absolute logit difference between ``runner`` and ``model`` (fp32 PyTorch) on random
    clips: batch 2 at T, and batch 1 at T+1 when T is dynamic. Raises ExportError above ``tolerance``."""
    model = model.float().cpu().eval()
    info = runner.info
    shapes = [(2, info.T), (1, info.T + 1 if info.dynamic_T else info.T)]
    worst = largest = 0.0
    for seed, (batch, T) in enumerate(shapes, 1):
        x = _example(info, batch, T, seed=seed)
        with torch.no_grad():
            expected = model(x).numpy()
        got = runner(x.numpy())
        if got.shape != expected.shape:
            raise ExportError(
                f"verification failed: the export gives logits of shape {got.shape} for input "
                f"{tuple(x.shape)}, PyTorch {expected.shape}"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
        largest = max(largest, float(np.abs(expected).max()))
    if not worst <= tolerance:
        hint = ""
        if largest > 0 and worst / largest < 1e-5:
            hint = (
                f" (the logits reach {largest:.3g}, so this is float rounding, {worst / largest:.1g} "
                "relative: an untrained model? --tolerance accepts it)"
            )
        raise ExportError(
            f"verification failed: the exported model differs from PyTorch by up to {worst:.3g} on the "
            f"logits (tolerance {tolerance:g}){hint}; nothing was written"
        )
    return worst


# ----------------------------------------------------------------------------------------------------
# int8 quantization (ONNX)
# ----------------------------------------------------------------------------------------------------


def calibration_clips(
    info: ModelInfo,
    dataset_path: str | Path,
    split: str = "train",
    count: int = 32,
    augment: bool | None = None,
) -> list[np.ndarray]:
    """``count`` clips of a prepared dataset's ``split`` as the model's input, spread evenly over its
    videos (with that split's sampling, or ``augment`` as for :func:`build_dataset`): what int8
    calibration measures activation ranges on."""
    from stnet.datasets import build_dataset

    if count < 1:
        raise ExportError("--calibration_clips must be at least 1")
    dataset = build_dataset(info.config(dataset_path=str(dataset_path)), split, augment=augment)
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    return [dataset[int(i)][0].unsqueeze(0).numpy() for i in picks]


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_int8(
    data: bytes,
    clips: list[np.ndarray],
    *,
    reduce_range: bool = True,
    exclude: Sequence[str] = ("fc",),
    method: str = "minmax",
    symmetric_activations: bool = False,
    extra_options: dict[str, Any] | None = None,
) -> bytes:
    """Static int8 quantization of an fp32 stnet ONNX model with ONNX Runtime: per-channel int8 weights,
    uint8 activations whose ranges are calibrated on ``clips`` (QDQ format, which every ONNX Runtime
    execution provider and OpenVINO read).

    The defaults are what kept the demo model's val top-1 within one video of fp32 in ONNX Runtime and
    OpenVINO (``benchmarks/backends.py int8``, docs/benchmarks.md):

    - ``reduce_range``: weights in 7 bits. On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) both
      runtimes multiply uint8 × int8 with ``vpmaddubsw``, whose int16 pair sums saturate with full 8-bit
      weights; that tripled the logit error and changed 3 of the 5 videos that int8 got wrong. 7-bit
      weights cannot saturate; on VNNI CPUs they cost a little precision and no speed.
    - ``exclude``: nodes kept in fp32, ``"fc"`` (the classifier: the last Gemm/MatMul), ``"first_conv"``
      or node names. With the classifier quantized its output, the logits themselves, is rounded to
      256 levels, which flips near-ties; in fp32 it costs no measurable speed (one small matrix).
    - ``method``: ``"minmax"`` (calibrated ranges are the observed ones), ``"percentile"`` or
      ``"entropy"`` (ONNX Runtime's; at its defaults the entropy search has one candidate, the MinMax
      range). Neither beat MinMax, nor did ``symmetric_activations`` (int8 activations, symmetric
      ranges) or ``extra_options`` such as ``{"CalibMovingAverage": True}`` (much worse).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {method!r}: one of {', '.join(CALIBRATION_METHODS)}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._clips = iter(clips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            clip = next(self._clips, None)
            return None if clip is None else {INPUT_NAME: np.ascontiguousarray(clip, dtype=np.float32)}

    source = onnx.load_from_string(data)
    meta = {p.key: p.value for p in source.metadata_props}
    if META_KEY not in meta:
        raise ExportError("only models exported by stnet can be quantized")
    with tempfile.TemporaryDirectory() as tmp, quiet_torch():
        fp32, pre, int8 = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(data)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(int8),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_nodes_named(onnx.load(str(pre)), exclude),
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[method],
            extra_options={"ActivationSymmetric": symmetric_activations, **(extra_options or {})},
        )
        proto = onnx.load(str(int8))
    info = dataclasses.replace(ModelInfo.from_json(meta[META_KEY]), precision="int8")
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, info.to_json()
    proto.doc_string = source.doc_string + " (int8)"
    return proto.SerializeToString()


def _nodes_named(proto: Any, names: Sequence[str]) -> list[str]:
    """The graph's node names for ``names``: ``"first_conv"`` is the first Conv, ``"fc"`` the last
    Gemm/MatMul (the classifier), anything else a node's own name."""
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    fcs = [n.name for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
    known = {n.name for n in proto.graph.node}
    found = []
    for name in names:
        picks = {"first_conv": convs[:1], "fc": fcs[-1:]}.get(name, [name] if name in known else [])
        if not picks:
            raise ExportError(f"the model has no node {name!r} to keep in fp32")
        found.extend(picks)
    return found


def check_quantized(runner: Runner, model: nn.Module, clips: list[np.ndarray], min_agreement: float) -> float:
    """The fraction of ``clips`` on which the quantized ``runner`` and the fp32 ``model`` predict the same
    class; raises ExportError below ``min_agreement``."""
    model = model.float().cpu().eval()
    x = np.concatenate(clips)
    batches = [x[i : i + 8] for i in range(0, len(x), 8)]
    with torch.no_grad():
        expected = np.concatenate([model(torch.from_numpy(b)).numpy() for b in batches])
    got = np.concatenate([runner(b) for b in batches])
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    if agreement < min_agreement:
        raise ExportError(
            f"int8 check failed: the quantized model predicts the fp32 model's class on {agreement:.0%} of "
            f"{len(x)} calibration clips (--min_agreement {min_agreement:g}); nothing was written. Calibrate "
            "on more clips (--calibration_clips), or export fp32"
        )
    return agreement


@dataclass
class ExportReport:
    path: Path
    fmt: str
    info: ModelInfo
    max_abs_diff: float
    size_bytes: int
    agreement: float | None = None  # int8: top-1 agreement with fp32 on the calibration clips (lowest)
    agreement_by_backend: dict[str, float] = dataclasses.field(default_factory=dict)


def export_model(
    model: nn.Module,
    info: ModelInfo,
    out: str | Path,
    fmt: str | None = None,
    *,
    tolerance: float = 1e-4,
    calibration: list[np.ndarray] | None = None,
    min_agreement: float = 0.9,
) -> ExportReport:
    """Export ``model`` described by ``info`` to ``out``, verify the result, then write it atomically.

    With ``calibration`` clips the ONNX export is quantized to int8 after its fp32 verification and
    checked for top-1 agreement with the fp32 model on those clips (:func:`check_quantized`), in each
    runtime of :func:`int8_backends`.
    """
    out = Path(out)
    fmt = format_for(out, fmt)
    if calibration is not None and fmt != "onnx":
        raise ExportError(f"int8 quantization is for ONNX exports, not {fmt}: name the output .onnx")
    data = export_bytes(model, info, fmt)
    diff = verify(runner_from_bytes(data, fmt), model, tolerance)
    agreement = None
    checked: dict[str, float] = {}
    if calibration is not None:
        data = quantize_int8(data, calibration)
        for choice in int8_backends():
            runner = runner_from_bytes(data, fmt, choice=choice)
            checked[choice.backend] = check_quantized(runner, model, calibration, min_agreement)
        agreement = min(checked.values())
        info = runner.info  # as the file describes itself: precision int8
    atomic_write_bytes(out, data)
    return ExportReport(out, fmt, info, diff, len(data), agreement, checked)


def int8_backends() -> list[BackendChoice]:
    """The runtimes an int8 export is checked on before it is written: ONNX Runtime, and OpenVINO
    where it is installed (``--backend auto`` runs it there on x86 CPUs)."""
    choices = [BackendChoice("onnxruntime", "int8 check")]
    with contextlib.suppress(ImportError):
        import openvino  # noqa: F401

        choices.append(BackendChoice("openvino", "int8 check"))
    return choices


def check_output(out: str | Path, inputs: Iterable[str | Path | None]) -> Path:
    """Before any work: refuse an ``out`` that is one of ``inputs`` (the checkpoint, the classes file,
    the config file, the calibration dataset) or that cannot be a file (a folder, or a path through a
    file). Returns ``out`` as a Path."""
    out = Path(out)
    refuse_overwriting_inputs([out], [Path(p) for p in inputs if p])
    if out.is_dir():
        raise OSFailure(IsADirectoryError(errno.EISDIR, "is a folder"), out, "writing")
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OSFailure(NotADirectoryError(errno.ENOTDIR, "not a folder"), out, "writing")
    return out


@contextlib.contextmanager
def export_lock(out: str | Path) -> Iterator[None]:
    """Hold a lock on the export target ``out`` (``.<name>.lock`` beside it, removed afterwards): a
    second export to the same file gets a one-line error naming the first one's PID. The lock is on the
    target, not on its folder, so that exporting into a run folder works while training goes on there."""
    out = Path(out)
    busy = f"{out} is being written by another stnet export (PID {{pid}}); wait for it to finish"
    with lock_file(out.parent / f".{out.name}.lock", busy, remove=True, target=out):
        yield
