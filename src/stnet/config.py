"""Typed, validated configuration: one flat set of keys, loaded from YAML and ``--key value`` overrides.

Key names are the MindSpore reference's (``T``, ``N``, ``class_num``, ``batch_size``, ``lr``, ...) so its
``default_config.yaml`` and command lines keep working; keys that only meant something on
Ascend/ModelArts/MindSpore are accepted and named in a single warning. Anything else that is unknown,
or a value of the wrong type or out of range, is a :class:`ConfigError` whose one-line message names
the key and the fix (the closest valid key, or the allowed values).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stnet.argtypes import MAX_SEED, MAX_WORKERS, WORKERS_WHY, range_problem
from stnet.errors import ConfigError
from stnet.model import DEPTHS


def _opt(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    group: str = "",
) -> Any:
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "group": group,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


MODEL, DATA, TRAIN, CKPT, RUN = "model", "data", "training", "checkpoints and evaluation", "runtime"

# The settings that decide the shapes of a model's weights: a checkpoint brings its own, and they
# cannot change without retraining.
WEIGHT_KEYS = ("depth", "class_num", "N", "xception", "stem_pool")
# Every setting :func:`stnet.build_model` takes (``class_num`` as ``num_classes``): the weight keys,
# plus T (the segments a clip is cut into; the weights do not depend on it) and the classifier's dropout.
MODEL_KEYS = (*WEIGHT_KEYS, "T", "dropout")


@dataclass
class Config:
    """Every setting of a run. Field names are the CLI flags (``--lr 0.01``) and the YAML keys."""

    # --- model
    depth: int = _opt(50, "ResNet depth of the backbone", choices=DEPTHS, group=MODEL)
    class_num: int = _opt(101, "number of classes (alias: num_classes)", low=1, group=MODEL)
    T: int = _opt(7, "segments per clip (seg_num)", low=1, group=MODEL)
    N: int = _opt(5, "consecutive frames stacked per segment (seglen)", low=1, group=MODEL)
    xception: str = _opt(
        "depthwise",
        "temporal Xception convolutions: depthwise (paper) or full (reference)",
        choices=("depthwise", "full"),
        group=MODEL,
    )
    stem_pool: str = _opt(
        "symmetric",
        "stem max-pool padding: symmetric (torchvision) or same (reference)",
        choices=("symmetric", "same"),
        group=MODEL,
    )
    dropout: float = _opt(
        0.0, "dropout before the classifier", low=0.0, high=1.0, high_open=True, group=MODEL
    )

    # --- data
    dataset_type: str = _opt("ucf101", "dataset recipe", choices=("ucf101", "kinetics400"), group=DATA)
    dataset_path: str = _opt("", "prepared dataset directory", group=DATA)
    target_size: int = _opt(112, "crop size fed to the model (pixels)", low=1, group=DATA)
    short_size: int = _opt(128, "frames are resized to this short side before cropping", low=1, group=DATA)
    image_mean: list[float] = _opt([0.485, 0.456, 0.406], "RGB mean used to normalise", group=DATA)
    image_std: list[float] = _opt(
        [0.229, 0.224, 0.225], "RGB std used to normalise", low=0.0, low_open=True, group=DATA
    )
    fixed_aspect: bool = _opt(
        False,
        "resize frames to a fixed 4:3 (the reference's group_scale) instead of keeping their aspect; "
        "a prepared dataset's own setting (prepare --fixed-aspect) is used when it records one",
        group=DATA,
    )
    flip: bool = _opt(
        True,
        "random horizontal flips in training; false for classes that depend on direction (left vs right)",
        group=DATA,
    )
    frame_colors: str = _opt(
        "auto",
        "colour order of JPEG frame folders: rgb, bgr (red and blue swapped, as the reference's UCF101 "
        "frames written by cv2) or auto (bgr only for folders laid out exactly as the reference writes them)",
        choices=("auto", "rgb", "bgr"),
        group=DATA,
    )
    workers: int = _opt(2, "data-loading worker processes", low=0, high=MAX_WORKERS, group=DATA)

    # --- training
    batch_size: int = _opt(16, "clips per step per process", low=1, group=TRAIN)
    num_epochs: int = _opt(90, "training epochs", low=1, group=TRAIN)
    lr: float = _opt(0.001, "initial learning rate", low=0.0, low_open=True, group=TRAIN)
    lr_schedule: str = _opt(
        "multistep",
        "learning-rate schedule after warm-up",
        choices=("multistep", "cosine", "constant"),
        group=TRAIN,
    )
    lr_milestones: list[int] = _opt(
        [40, 80], "epochs after which the lr is multiplied by gamma", low=1, group=TRAIN
    )
    gamma: float = _opt(0.1, "multistep lr factor", low=0.0, low_open=True, high=1.0, group=TRAIN)
    lr_decay_rate: int = _opt(
        0, "reference key: decay every this many epochs (sets lr_milestones; 0 = off)", low=0, group=TRAIN
    )
    warmup_epochs: float = _opt(0.0, "linear lr warm-up length in epochs", low=0.0, group=TRAIN)
    base_batch: int = _opt(
        0,
        "global batch (batch × processes × accumulation) the lr was tuned for; 0 = none recorded",
        low=0,
        group=TRAIN,
    )
    scale_lr: bool = _opt(
        True, "scale lr linearly by global batch / base_batch (when base_batch is set)", group=TRAIN
    )
    momentum: float = _opt(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True, group=TRAIN)
    nesterov: bool = _opt(False, "Nesterov momentum", group=TRAIN)
    weight_decay: float = _opt(
        0.0001, "L2 weight decay (not on BatchNorm weights/biases)", low=0.0, group=TRAIN
    )
    label_smoothing: float = _opt(
        0.0, "cross-entropy label smoothing", low=0.0, high=1.0, high_open=True, group=TRAIN
    )
    precision: str = _opt(
        "auto",
        "auto (bf16 where the hardware has it), bf16, fp16 or fp32",
        choices=("auto", "bf16", "fp16", "fp32"),
        group=TRAIN,
    )
    channels_last: bool = _opt(True, "channels-last memory format", group=TRAIN)
    accumulate_steps: int = _opt(1, "gradient-accumulation steps per optimizer step", low=1, group=TRAIN)
    clip_grad_norm: float = _opt(0.0, "clip gradients to this global norm (0 = off)", low=0.0, group=TRAIN)
    sync_bn: bool = _opt(False, "synchronise BatchNorm statistics across processes (CUDA)", group=TRAIN)
    freeze_bn: bool = _opt(
        False,
        "BatchNorm uses and keeps its running statistics while training (for tiny batches)",
        group=TRAIN,
    )
    precise_bn: int = _opt(
        0,
        "before each evaluation, recompute BatchNorm statistics as the average over this many "
        "training batches (0 = off; helps small batches and short runs)",
        low=0,
        group=TRAIN,
    )
    pre_res50: str = _opt(
        "", "ImageNet ResNet weights to initialise the backbone (any supported format)", group=TRAIN
    )
    finetune: str = _opt(
        "", "whole-StNet weights to start from (optimizer and epoch start fresh)", group=TRAIN
    )
    resume: str = _opt(
        "", "checkpoint to continue training from exactly ('auto' = last in output_dir)", group=TRAIN
    )

    # --- checkpoints and evaluation
    output_dir: str = _opt("runs/stnet", "directory for checkpoints, logs and plots", group=CKPT)
    checkpoint_path: str = _opt("", "checkpoint directory (default: <output_dir>/checkpoints)", group=CKPT)
    summary_dir: str = _opt("", "TensorBoard directory (default: <output_dir>/tensorboard)", group=CKPT)
    save_checkpoint: bool = _opt(True, "write periodic checkpoints", group=CKPT)
    save_checkpoint_epochs: int = _opt(1, "checkpoint every this many epochs", low=1, group=CKPT)
    keep_checkpoint_max: int = _opt(5, "periodic checkpoints kept (newest)", low=1, group=CKPT)
    save_best_ckpt: bool = _opt(True, "keep the checkpoint with the best val top-1 as best", group=CKPT)
    run_eval: bool = _opt(True, "evaluate on the val split during training", group=CKPT)
    eval_start_epoch: int = _opt(1, "first epoch evaluated", low=1, group=CKPT)
    eval_interval: int = _opt(1, "evaluate every this many epochs", low=1, group=CKPT)
    compile: bool = _opt(
        False,
        "stnet eval: torch.compile with frozen weights (about 2x faster bf16 on CPUs with AMX; "
        "compiling takes ~15 s per batch shape)",
        group=CKPT,
    )

    # --- runtime
    device: str = _opt("auto", "auto (CUDA if present), cpu, cuda or cuda:K", group=RUN)
    seed: int = _opt(1, "random seed", low=0, high=MAX_SEED, group=RUN)
    deterministic: bool = _opt(False, "deterministic algorithms (slower; exact reruns)", group=RUN)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field and the relations between them; raise ConfigError on the first problem."""
        for f in dataclasses.fields(self):
            _check_value(f, getattr(self, f.name))
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ConfigError("image_mean and image_std need exactly 3 values (R, G, B)")
        _check_unit_scale("image_mean", self.image_mean)
        _check_unit_scale("image_std", self.image_std)
        if self.target_size > self.short_size:
            raise ConfigError(
                f"target_size {self.target_size} is larger than short_size {self.short_size}: "
                "the crop must fit in the resized frame"
            )
        if self.lr_milestones != sorted(set(self.lr_milestones)):
            raise ConfigError(f"lr_milestones must be increasing epochs, got {self.lr_milestones}")
        if self.warmup_epochs >= self.num_epochs:
            raise ConfigError(
                f"warmup_epochs {self.warmup_epochs} must be below num_epochs {self.num_epochs}"
            )
        if self.precise_bn and self.freeze_bn:
            raise ConfigError(
                "precise_bn recomputes the BatchNorm statistics that freeze_bn keeps fixed: set one of them"
            )
        if self.finetune and self.pre_res50:
            raise ConfigError(
                "finetune loads a whole StNet over the ImageNet backbone that pre_res50 would load: keep "
                "--finetune to start from that StNet, or --pre_res50 to start from ImageNet, not both"
            )
        if self.finetune and self.resume and self.resume != "auto":
            raise ConfigError(
                "resume continues a run exactly (its weights, optimizer and epoch), so the finetune weights "
                "would be ignored: keep --resume to continue that run, or --finetune to start a new one"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML, grouped, every key with its help as a comment."""
        lines: list[str] = []
        group = None
        for f in dataclasses.fields(self):
            if f.metadata["group"] != group:
                group = f.metadata["group"]
                lines.append(f"{'' if not lines else chr(10)}# --- {group}")
            value = yaml.safe_dump({f.name: getattr(self, f.name)}, default_flow_style=True, width=1000)
            lines.append(f"{value.strip()[1:-1]:<40} # {f.metadata['help']}")
        return "\n".join(lines) + "\n"

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`stnet.StNet` for this config (see :func:`stnet.build_model`)."""
        kwargs = {k: getattr(self, k) for k in MODEL_KEYS}
        kwargs["num_classes"] = kwargs.pop("class_num")
        return kwargs

    @property
    def milestones(self) -> list[int]:
        """The effective multistep milestones (``lr_decay_rate``, the reference's key, wins when set)."""
        if self.lr_decay_rate:
            return list(range(self.lr_decay_rate, self.num_epochs, self.lr_decay_rate))
        return list(self.lr_milestones)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
START_KEYS = ("pre_res50", "finetune", "resume")  # where a training run takes its first weights from
HINTS = typing.get_type_hints(Config)
ALIASES = {
    "num_classes": "class_num",
    "seg_num": "T",
    "seglen": "N",
    "epochs": "num_epochs",
    "base_batch_size": "base_batch",
}

# Keys of the MindSpore reference that configure MindSpore, Ascend, ModelArts or its own launch scripts.
REFERENCE_ONLY = frozenset(
    {
        "mode",
        "dataset_sink_mode",
        "run_online",
        "data_url",
        "local_data_url",
        "pre_res50_art_load_path",
        "best_acc_art_load_path",
        "pre_url",
        "load_path",
        "local_train_list",
        "local_val_list",
        "train_url",
        "output_path",
        "target",
        "device_id",
        "device_num",
        "rank_id",
        "run_distribute",
        "steps_size",
        "eval_per_epoch",
        "parameter_server",
        "val_data_dir",
        "profile",
        "avgpool_kernel_size",
        "config_path",
        "enable_modelarts",
        "checkpoint_url",
        "save_graphs",
        "enable_profiling",
    }
)


def _describe(name: str) -> str:
    f = FIELDS[name]
    if f.metadata["choices"]:
        return "one of " + ", ".join(str(c) for c in f.metadata["choices"])
    hint = HINTS[name]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "a comma-separated list of " + ("integers" if typing.get_args(hint) == (int,) else "numbers")
    )


def _check_unit_scale(name: str, values: list[float]) -> None:
    """Normalisation acts on pixels scaled to 0-1: a value above 1 is on the 0-255 scale."""
    if any(v > 1 for v in values):
        scaled = ",".join(f"{v / 255:.4g}" for v in values)
        raise ConfigError(
            f"{name}: {','.join(f'{v:g}' for v in values)} is on the 0-255 pixel scale; values are on "
            f"the 0-1 scale (pixel / 255): use --{name} {scaled}"
        )


def _check_value(f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    items = value if isinstance(value, list) else [value]
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{f.name}: {value!r} is not allowed; use {_describe(f.name)}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        problem = range_problem(
            v, meta["low"], meta["high"], low_open=meta["low_open"], high_open=meta["high_open"]
        )
        if problem:
            why = WORKERS_WHY if f.name == "workers" and v > MAX_WORKERS else ""
            raise ConfigError(f"{f.name}: {value!r} is out of range; {problem}{why}")


def _parse_scalar(name: str, kind: type, raw: Any) -> Any:
    """Convert one YAML or command-line value to ``kind``; ConfigError naming the key if impossible."""
    bad = ConfigError(f"{name}: {raw!r} is not valid; use {_describe(name)}")
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad
    if kind is int:
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw).strip())
        except ValueError:
            raise bad from None
    if kind is float:
        if isinstance(raw, bool):
            raise bad
        try:
            return float(str(raw).strip())
        except ValueError:
            raise bad from None
    if kind is str:
        if raw is None:
            return ""
        if isinstance(raw, list | dict):
            raise bad
        return str(raw)
    raise AssertionError(kind)


def parse_value(name: str, raw: Any) -> Any:
    """Parse a value for key ``name`` given as YAML data or a command-line string."""
    hint = HINTS[name]
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if isinstance(raw, str):
            text = raw.strip().strip("[]")
            raw = [p for p in text.replace(" ", ",").split(",") if p] if text else []
        if not isinstance(raw, list | tuple):
            raw = [raw]
        return [_parse_scalar(name, item, r) for r in raw]
    return _parse_scalar(name, hint, raw)


def canonical_key(key: str) -> str:
    """Resolve aliases; raise ConfigError with the closest valid key for an unknown one."""
    key = key.replace("-", "_")
    key = ALIASES.get(key, key)
    if key in FIELDS:
        return key
    valid = list(FIELDS) + list(ALIASES)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or difflib.get_close_matches(
        key.lower(), [v.lower() for v in valid], n=1, cutoff=0.6
    )
    hint = f"; did you mean '{close[0]}'?" if close else "; `stnet config` lists the valid keys"
    raise ConfigError(f"unknown config key '{key}'{hint}")


def apply_overrides(values: dict[str, Any], updates: Mapping[str, Any], ignored: list[str]) -> None:
    """Merge ``updates`` into ``values`` (parsed), collecting reference-only keys in ``ignored``."""
    for raw_key, raw in updates.items():
        if raw_key in REFERENCE_ONLY:
            ignored.append(raw_key)
            continue
        key = canonical_key(str(raw_key))
        values[key] = parse_value(key, raw)
        if key == "lr_milestones":  # the later of the two milestone keys wins
            values["lr_decay_rate"] = 0


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML file into a flat mapping (ConfigError if missing or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml_mapping(path, path.read_bytes())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of key: value, not {type(data).__name__}")
    return data


def yaml_mapping(path: Path, raw: bytes) -> Any:
    """Parse the bytes of the YAML file ``path`` (UTF-8, with or without a byte-order mark).

    Text that is not UTF-8 is a ConfigError naming the byte offset of the first bad byte; text that is
    not YAML (or holds control characters, as a binary file does) names the line and column.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at byte offset {e.start}): "
            "save the config as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        if isinstance(e, yaml.reader.ReaderError):  # a control character: binary data, not text
            line = text.count("\n", 0, e.position) + 1
            raise ConfigError(
                f"{path}:{line}: not a YAML text file (control character 0x{e.character:02x}); "
                "give a config YAML"
            ) from None
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and start is not mark:
            problem += f" ({context} that starts at line {start.line + 1})"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None


def parse_cli_overrides(argv: Sequence[str]) -> dict[str, str]:
    """``['--lr', '0.01', '--run_eval=false']`` → ``{'lr': '0.01', 'run_eval': 'false'}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument '{arg}'; settings are given as --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or (argv[i + 1].startswith("--") and not _is_number(argv[i + 1])):
                raise ConfigError(f"--{key} needs a value")
            value = argv[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    *,
    warn: bool = True,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults ← ``base`` ← YAML file ← overrides (a mapping, or ``--key value`` strings) → validated
    Config. ``base`` is e.g. the config saved in a training checkpoint (keys unknown here are dropped)."""
    values: dict[str, Any] = {}
    ignored: list[str] = []
    if base:  # how that run started (its initial weights, what it resumed) is not a setting to reuse
        known = {f.name for f in dataclasses.fields(Config)} - set(START_KEYS)
        apply_overrides(values, {k: v for k, v in base.items() if k in known}, ignored)
    if path:
        apply_overrides(values, read_yaml(resolve_config_path(str(path))), ignored)
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_cli_overrides(list(overrides))
        apply_overrides(values, overrides, ignored)
    if ignored and warn:
        names = ", ".join(dict.fromkeys(ignored))
        print(
            f"stnet: warning: ignoring reference-only keys (MindSpore/Ascend/ModelArts settings): {names}",
            file=sys.stderr,
        )
    return Config(**values)


CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config_path(name: str) -> Path:
    """A config file path as given, or the name of one shipped with stnet (``ucf101``, ``kinetics400``)."""
    path = Path(name)
    if path.is_file():
        return path
    builtin = CONFIG_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if builtin.is_file() and path.parent == Path("."):
        return builtin
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file not found: {name} (built-in configs: {names})")
