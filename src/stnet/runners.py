"""Exported models as deployment sees them: their description (:class:`ModelInfo`) and loading the
files ``stnet export`` writes (:func:`load_exported`) into a :class:`Runner`.

Every exported file carries :class:`ModelInfo` as JSON (ONNX metadata property ``stnet``;
``extra/stnet.json`` in the PyTorch archives): class names, T, N, crop size, resize, mean/std and the
sampling recipe, so ``stnet infer``/``stnet predict`` need nothing else. This module holds no
exporting code: inference depends on it, and :mod:`stnet.export` uses it to verify what it wrote.

Loading takes the format from the file's name, and the contents must agree. ONNX is parsed as data and
always safe to load; pt2 and TorchScript can run code by design, so they load only when the caller
trusts the file (``--trust-model``), and a pt2 archive is refused if it holds pickled entries beyond
what ``torch.export.save`` writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stnet import __version__
from stnet.config import WEIGHT_KEYS, Config
from stnet.errors import OSFailure, StnetError

SUFFIXES = {".onnx": "onnx", ".pt2": "pt2", ".ts": "torchscript", ".torchscript": "torchscript"}
META_KEY = "stnet"
META_FILE = "stnet.json"
INPUT_NAME, OUTPUT_NAME = "clips", "logits"
RECIPE_TEXT = {  # the eval sampling of stnet.sampling, for people who reimplement the preprocessing
    "ucf101": "T equal segments; in each, N frames spread over a centred window of 2N frames "
    "(stnet.sampling.ucf_indices); short side resized to short_size, centre crop size x size",
    "kinetics400": "T equal segments; in each, N consecutive frames from its centre "
    "(stnet.sampling.kinetics_indices); short side resized to short_size, centre crop size x size",
}


class ExportError(StnetError, RuntimeError):
    """An export that could not be made or does not match the PyTorch model, or an exported file that
    cannot be loaded."""


_INFO_WEIGHT_KEYS = tuple(k for k in WEIGHT_KEYS if k != "class_num")  # ModelInfo has the class names


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed model needs besides its weights: how to turn a video into its input, and the
    names of its outputs. The input is float32 ``(batch, T, 3N, size, size)``, RGB, normalised."""

    class_names: list[str]
    T: int
    N: int
    size: int
    short_size: int
    mean: list[float]
    std: list[float]
    recipe: str
    depth: int
    xception: str = "depthwise"
    stem_pool: str = "symmetric"
    flip: bool = True  # trained with mirrored clips: False means direction matters (no mirrored test crops)
    fixed_aspect: bool = False  # frames resized to a fixed 4:3 (prepare --fixed-aspect), not keeping aspect
    dynamic_T: bool = True
    precision: str = "fp32"  # "int8": ONNX with int8 weights and activations (quantize_int8)
    stnet_version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_config(cls, cfg: Config, class_names: list[str]) -> ModelInfo:
        return cls(
            class_names=list(class_names),
            T=cfg.T,
            size=cfg.target_size,
            short_size=cfg.short_size,
            mean=list(cfg.image_mean),
            std=list(cfg.image_std),
            recipe=cfg.dataset_type,
            flip=cfg.flip,
            fixed_aspect=cfg.fixed_aspect,
            dynamic_T=cfg.T > 1,
            **{k: getattr(cfg, k) for k in _INFO_WEIGHT_KEYS},
        )

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["input"] = {
            "name": INPUT_NAME,
            "shape": ["batch", "T" if self.dynamic_T else self.T, 3 * self.N, self.size, self.size],
            "layout": "B,T,3N,H,W: T segments of N consecutive RGB frames stacked on channels",
            "dtype": "float32",
            "normalise": "x = (pixel / 255 - mean) / std",
        }
        data["recipe_text"] = RECIPE_TEXT.get(self.recipe, self.recipe)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelInfo:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def config(self, **overrides: Any) -> Config:
        """A config whose data keys reproduce this model's evaluation input (for stnet's datasets)."""
        values = {
            "class_num": self.num_classes,
            "T": self.T,
            "target_size": self.size,
            "short_size": self.short_size,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "dataset_type": self.recipe,
            "flip": self.flip,
            "fixed_aspect": self.fixed_aspect,
            **{k: getattr(self, k) for k in _INFO_WEIGHT_KEYS},
        }
        return dataclasses.replace(Config(), **{**values, **overrides})


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence PyTorch's export/load progress prints, deprecation notes and the torchvision-op warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ----------------------------------------------------------------------------------------------------
# Running an exported file (used by export's verification, `stnet infer` and `stnet predict`)
# ----------------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """An exported model ready to run: ``runner(clips)`` maps float32 (B,T,3N,H,W) to logits (B,K)."""

    info: ModelInfo
    fmt: str
    run: Callable[[np.ndarray], np.ndarray]
    backend: str  # the runtime, its version, device and precision, as reports show it
    choice: BackendChoice | None = None  # why this backend (set by load_exported and open_model)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        return self.run(np.ascontiguousarray(clips, dtype=np.float32))

    def describe(self) -> str:
        """``backend <runtime, version, device, precision> (<why it was chosen>)``."""
        return f"backend {self.backend}" + (f" ({self.choice.reason})" if self.choice else "")


def onnx_info(data: bytes) -> ModelInfo:
    """The :class:`ModelInfo` an ONNX file carries (metadata property ``stnet``), read as data."""
    import onnx

    proto = onnx.load_model_from_string(data)
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in meta:
        raise ExportError("this ONNX model was not exported by stnet (it has no 'stnet' metadata)")
    return ModelInfo.from_json(meta[META_KEY])


def _onnx_runner(data: bytes, threads: int | None, providers: Sequence[str] = ()) -> Runner:
    """ONNX Runtime on ``providers`` (execution providers in order of preference; default: CUDA when
    this ONNX Runtime has it, else the CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    available = ort.get_available_providers()
    wanted = list(providers) or ["CUDAExecutionProvider"]
    chosen = [p for p in (*wanted, "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(data, options, providers=list(dict.fromkeys(chosen)))
    meta = session.get_modelmeta().custom_metadata_map
    if META_KEY not in meta:
        raise ExportError("this ONNX model was not exported by stnet (it has no 'stnet' metadata)")
    info = ModelInfo.from_json(meta[META_KEY])
    name = session.get_inputs()[0].name

    def run(clips: np.ndarray) -> np.ndarray:
        return session.run(None, {name: clips})[0]

    backend = f"onnxruntime {ort.__version__} {session.get_providers()[0]}"
    return Runner(info, "onnx", run, backend + (f" {info.precision}" if info.precision != "fp32" else ""))


def _openvino_runner(data: bytes, threads: int | None, precision: str = "fp32") -> Runner:
    """OpenVINO on the CPU, reading the ONNX file through its ONNX front end only (never another
    format, never a pickle), computing in ``precision`` (``fp32`` or ``bf16``: OpenVINO's inference
    precision; an int8 (QDQ) model runs its quantized layers in int8 either way)."""
    try:
        import openvino as ov
        from openvino.frontend import FrontEndManager
    except ImportError:
        raise BackendError(OPENVINO_MISSING) from None

    info = onnx_info(data)
    if info.precision == "int8":  # its float layers stay fp32: the int8 accuracy was checked in fp32
        precision = "fp32"
    front_end = FrontEndManager().load_by_framework("onnx")
    model = front_end.convert(front_end.load(io.BytesIO(data)))
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # what the CPU plugin actually computes in
    ran = {"f32": "fp32"}.get(
        hint.get_type_name(), hint.get_type_name()
    )  # bf16 falls back to f32 if unsupported

    def run(clips: np.ndarray) -> np.ndarray:
        return np.array(request.infer([clips])[0])

    what = "int8" if info.precision == "int8" else ran
    return Runner(info, "onnx", run, f"openvino {ov.__version__.split('-')[0]} CPU {what}")


def _torch_runner(data: bytes, fmt: str, threads: int | None) -> Runner:
    if fmt == "pt2":
        _check_pt2_archive(data)  # even when trusted: no pickles beyond what torch.export.save writes
    if threads:
        torch.set_num_threads(threads)
    extra = {META_FILE: ""}
    with quiet_torch():
        if fmt == "pt2":
            module = torch.export.load(io.BytesIO(data), extra_files=extra).module()
        else:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    if not extra[META_FILE]:
        raise ExportError(f"this {fmt} file was not exported by stnet (it has no {META_FILE})")
    info = ModelInfo.from_json(extra[META_FILE])

    @torch.no_grad()
    def run(clips: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(clips)).numpy()

    return Runner(info, fmt, run, f"torch {torch.__version__} {fmt}")


# ----------------------------------------------------------------------------------------------------
# Backends: which runtime runs a model (``--backend``)
# ----------------------------------------------------------------------------------------------------

BACKENDS = ("auto", "onnxruntime", "openvino", "torch")
OPENVINO_MISSING = "--backend openvino needs OpenVINO, which is not installed: pip install stnet[openvino]"
BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}  # /proc/cpuinfo flags: native bf16
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # ONNX Runtime's, best first
X86 = ("x86_64", "amd64", "i386", "i686")


class BackendError(StnetError, ValueError):
    """A ``--backend`` that cannot run this model here."""


@dataclass(frozen=True)
class Host:
    """What ``--backend auto`` decides on: the CPU, and which runtimes can run here."""

    arch: str  # platform.machine(), lower case
    cpu_flags: frozenset[str]  # /proc/cpuinfo flags (empty where unreadable)
    openvino: bool  # OpenVINO is importable
    openvino_caps: tuple[str, ...] = ()  # OpenVINO's CPU OPTIMIZATION_CAPABILITIES (FP32, BF16, INT8, ...)
    gpu_providers: tuple[str, ...] = ()  # ONNX Runtime GPU providers built in, when a GPU is present

    @property
    def x86(self) -> bool:
        return self.arch in X86

    @property
    def bf16(self) -> str | None:
        """Why this CPU computes bf16 natively (a flag, or OpenVINO's capability), or None."""
        flag = next((f for f in BF16_FLAGS if f in self.cpu_flags), None)
        if flag is not None:
            return f"the CPU has {BF16_FLAGS[flag]}"
        return "OpenVINO reports BF16 on this CPU" if "BF16" in self.openvino_caps else None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (its text, or read here; empty if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def detect_host() -> Host:
    """This machine as :func:`choose_backend` sees it (imports OpenVINO and ONNX Runtime if present)."""
    import platform

    openvino, caps = True, tuple[str, ...]()
    try:
        import openvino as ov

        caps = tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed (ImportError), or no usable CPU plugin: ONNX Runtime then
        openvino = False
    gpu: tuple[str, ...] = ()
    if torch.cuda.is_available():
        import onnxruntime as ort

        gpu = tuple(p for p in GPU_PROVIDERS if p in ort.get_available_providers())
    return Host(platform.machine().lower(), cpu_flags(), openvino, caps, gpu)


@dataclass(frozen=True)
class BackendChoice:
    """The runtime that runs a model, and why (printed by ``stnet infer``/``stnet predict``)."""

    backend: str  # "onnxruntime", "openvino" or "torch"
    reason: str
    precision: str = "fp32"  # OpenVINO's inference precision: "fp32" or "bf16"
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, best first (CPU after them)


def choose_backend(requested: str, fmt: str, host: Host | None = None) -> BackendChoice:
    """The backend ``--backend requested`` means for a model of ``fmt`` (``onnx``, ``pt2``,
    ``torchscript`` or ``checkpoint``) on ``host`` (default: this machine, :func:`detect_host`).

    ``auto`` takes the fastest that keeps accuracy: ONNX Runtime's TensorRT/CUDA providers when a GPU
    is present; else OpenVINO in bf16 on x86 CPUs that compute bf16 natively, where it is installed;
    else ONNX Runtime on the CPU (``--backend openvino`` runs fp32 on other CPUs). Checkpoints, pt2
    and TorchScript run in PyTorch (``torch``)."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if fmt != "onnx":
        what = "a checkpoint" if fmt == "checkpoint" else f"a {fmt} model"
        if requested not in ("auto", "torch"):
            raise BackendError(
                f"--backend {requested} runs .onnx exports; {what} runs in PyTorch (--backend torch)"
            )
        return BackendChoice("torch", f"{what} runs in PyTorch")
    if requested == "torch":
        raise BackendError(
            "--backend torch runs a checkpoint (--checkpoint) or a trusted .pt2/.ts export; an .onnx model "
            "runs with --backend onnxruntime or openvino"
        )
    host = host or detect_host()
    if requested == "openvino" and not host.openvino:
        raise BackendError(OPENVINO_MISSING)
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", "asked for (--backend onnxruntime)", providers=host.gpu_providers)
    fast_cpu = host.openvino and host.x86 and host.bf16 is not None and not host.gpu_providers
    if requested == "openvino" or fast_cpu:
        bf16 = host.bf16
        precision = "bf16" if bf16 else "fp32"
        why = f"{bf16}, so bf16" if bf16 else "no native bf16 on this CPU, so fp32"
        if requested == "openvino":
            return BackendChoice("openvino", f"asked for (--backend openvino); {why}", precision)
        return BackendChoice("openvino", f"OpenVINO is installed and this is an x86 CPU; {why}", precision)
    # OpenVINO fp32 measured 0.82x ONNX Runtime fp32 on an EPYC without bf16 (docs/benchmarks.md)
    if host.gpu_providers:
        gpu = host.gpu_providers[0].removesuffix("ExecutionProvider")
        return BackendChoice(
            "onnxruntime", f"a GPU is present ({gpu} provider)", providers=host.gpu_providers
        )
    if not host.openvino:
        why = "OpenVINO is not installed (pip install stnet[openvino] is faster on bf16 x86 CPUs)"
    elif host.x86:
        why = "no native bf16 on this CPU, where OpenVINO fp32 is not faster than ONNX Runtime"
    else:
        why = f"OpenVINO is for x86 CPUs, this is {host.arch}"
    return BackendChoice("onnxruntime", f"CPU; {why}")


# What loading each format can do. ONNX is parsed by ONNX Runtime as data: a file can at worst fail to
# load. The PyTorch formats can run code by design: a pt2 graph may call any Python function reachable
# from ``torch`` and torch.export.load unpickles parts of the archive; a TorchScript archive carries
# TorchScript code. Those load only when the user says the file is trusted (``--trust-model``).
CODE_FORMATS = ("pt2", "torchscript")
TRUST_HINT = (
    "pt2 and TorchScript files can run code when loaded: pass --trust-model only for a file from a "
    "source you trust, or use an .onnx export (always safe to load)"
)

# Every entry torch.export.save writes for one model, below the archive's root folder. Pickled entries
# are limited to data/sample_inputs/model.pt, which must load with weights_only=True; weights and
# constants must be raw tensor bytes (their configs say use_pickle: false).
_PT2_ENTRY = re.compile(
    r"(\.data/version|\.data/serialization_id|archive_format|archive_version|byteorder"
    r"|models/model\.json|extra/[^/]+|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+)"
)
_PT2_PAYLOADS = {
    "data/weights/model_weights_config.json": "weight_",
    "data/constants/model_constants_config.json": "tensor_",
}


class UnsafeModelError(ExportError):
    """A model file that is refused because loading it could run code it carries."""


def _zip_entries(data: bytes, fmt: str) -> tuple[zipfile.ZipFile, str, list[str]]:
    """The archive, its root folder and its entries below the root; ExportError if it is not one
    well-formed PyTorch archive (one root folder, no duplicate names)."""
    if data[:4] != b"PK\x03\x04":
        raise ExportError(f"it is not a {fmt} archive (not a zip file)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError) as e:
        raise ExportError(f"it is not a readable {fmt} archive ({e})") from None
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise UnsafeModelError(f"it is not a {fmt} archive (entries outside one root folder)")
    if len(set(names)) != len(names):
        raise UnsafeModelError(f"refusing this {fmt} archive: it names an entry twice")
    root = roots.pop()
    return archive, root, [n.split("/", 1)[1] for n in names]


def _check_pt2_archive(data: bytes) -> None:
    """Refuse a pt2 archive with anything torch.export.save does not write, or with pickled entries
    that ``torch.export.load`` would unpickle with ``weights_only=False`` (legacy weight files, pickled
    weights or constants, custom objects)."""
    from stnet.weights import torch_load_safely

    archive, root, entries = _zip_entries(data, "pt2")
    if "archive_format" not in entries:
        raise ExportError("it is not a pt2 archive (no archive_format entry)")
    if archive.read(f"{root}/archive_format").strip() != b"pt2":
        raise ExportError("it is not a pt2 archive (archive_format is not pt2)")
    foreign = [e for e in entries if not _PT2_ENTRY.fullmatch(e)]
    if foreign:
        raise UnsafeModelError(
            f"refusing this pt2 archive: it holds {foreign[0]}, which torch.export.save does not write "
            "(such entries are unpickled and can run code)"
        )
    for config, prefix in _PT2_PAYLOADS.items():
        if config not in entries:
            raise ExportError(f"it is not a complete pt2 archive (no {config})")
        try:
            payloads = json.loads(archive.read(f"{root}/{config}"))["config"].values()
            unsafe = [
                p for p in payloads if p["use_pickle"] is not False or not p["path_name"].startswith(prefix)
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ExportError(f"it is not a readable pt2 archive ({config} is malformed)") from None
        if unsafe:
            raise UnsafeModelError(
                f"refusing this pt2 archive: {config} has pickled entries ({unsafe[0].get('path_name')}), "
                "which torch.export.save writes only for tensor subclasses; they can run code"
            )
    inputs = "data/sample_inputs/model.pt"
    if inputs in entries:
        try:
            torch_load_safely(archive.read(f"{root}/{inputs}"))
        except ValueError as e:
            raise UnsafeModelError(f"refusing this pt2 archive: {inputs}: {e}") from None


def _check_content(data: bytes, fmt: str) -> None:
    """The file's contents must be of the format its name says; ExportError otherwise."""
    if fmt == "onnx":
        if data[:2] == b"PK":
            raise ExportError(
                "it is named .onnx but is a zip archive (a PyTorch file?); an .onnx file is only ever "
                "read as ONNX"
            )
        return
    _archive, _root, entries = _zip_entries(data, fmt)
    is_pt2 = "archive_format" in entries
    if fmt == "torchscript" and (is_pt2 or "data.pkl" not in entries):
        found = "a pt2 (torch.export) archive" if is_pt2 else "no TorchScript model"
        raise ExportError(f"it is named as TorchScript (.ts) but holds {found}")
    if fmt == "pt2" and not is_pt2:
        raise ExportError("it is named .pt2 but is not a torch.export archive (no archive_format entry)")


def model_format(path: str | Path) -> str:
    """The format of a model file to load, from its name alone: ``.onnx``, ``.pt2`` or ``.ts``."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ExportError(
            f"cannot tell the format of {path}: a model from stnet export is named .onnx, .pt2 or .ts"
        )
    return SUFFIXES[suffix]


def load_exported(
    path: str | Path, threads: int | None = None, *, trust: bool = False, backend: str = "auto"
) -> Runner:
    """Open a file written by ``stnet export`` for inference, with ``backend`` (one of
    :data:`BACKENDS`; ``auto`` as :func:`choose_backend` decides, recorded in ``Runner.choice``).

    The format comes from the file's name and the contents must agree (an ``.onnx`` is only ever read as
    ONNX, by ONNX Runtime or OpenVINO). pt2 and TorchScript files can run code when loaded, so they are
    refused unless ``trust`` is set (``--trust-model``); even then a pt2 archive with pickled entries
    beyond what ``torch.export.save`` writes is refused (:func:`_check_pt2_archive`)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model not found: {path}")
    fmt = model_format(path)
    choice = choose_backend(backend, fmt)
    if fmt in CODE_FORMATS and not trust:
        raise UnsafeModelError(f"{path}: refusing to load a {fmt} model without --trust-model: {TRUST_HINT}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    try:
        _check_content(data, fmt)
        runner = runner_from_bytes(data, fmt, threads, choice)
    except (ExportError, BackendError) as e:
        raise type(e)(f"{path}: {e}") from None
    except Exception as e:  # a damaged or foreign file: one line, not the runtime's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path} is not a readable stnet {fmt} model: {first}") from None
    return dataclasses.replace(runner, choice=choice)


def runner_from_bytes(
    data: bytes, fmt: str, threads: int | None = None, choice: BackendChoice | None = None
) -> Runner:
    """A Runner of an exported file's bytes: ONNX in ONNX Runtime unless ``choice`` says otherwise."""
    if fmt != "onnx":
        return _torch_runner(data, fmt, threads)
    if choice is not None and choice.backend == "openvino":
        return _openvino_runner(data, threads, choice.precision)
    return _onnx_runner(data, threads, choice.providers if choice else ())


def class_names_for(
    cfg: Config, from_checkpoint: list[str] | None, classes_file: str | Path | None = None
) -> list[str]:
    """Class names: ``classes_file`` (``<name> <index>`` lines, or one name per line), else the
    checkpoint's, else the dataset's ``classes.txt``, else ``0 .. class_num-1``."""
    from stnet.lists import read_classes

    if classes_file is not None:
        path = Path(classes_file)
        if not path.is_file():
            raise ExportError(f"classes file not found: {path}")
        names = read_classes(path, plain_names=True)
    elif from_checkpoint:
        names = list(from_checkpoint)
    elif cfg.dataset_path and (Path(cfg.dataset_path) / "classes.txt").is_file():
        names = read_classes(Path(cfg.dataset_path) / "classes.txt")
    else:
        names = [str(i) for i in range(cfg.class_num)]
    if len(names) != cfg.class_num:
        raise ExportError(f"{len(names)} class names for a model with {cfg.class_num} classes")
    return names
