"""``stnet features``: clip embeddings (or per-segment features) of videos, for retrieval and clustering.

Each video is sampled with the model's eval recipe (``--clips`` × ``--crops`` views, as ``stnet
predict``); every view goes through the model and the rows are the mean over the views (weighted as
``predict`` weighs repeated views of short videos):

* the clip embedding (default): ``model.forward_head(model.forward_features(x), pre_logits=True)``,
  the Temporal Xception's output max-pooled over segments, ``(C/2,)`` per video (1024 for R50);
* ``--per-segment``: ``model.forward_features(x)``, the backbone's pooled feature of each segment,
  ``(T, C)`` per video.

Output, in the ``--out`` folder: ``features.npy`` (or ``features.safetensors``, tensor ``features``),
``index.csv`` (``row,path,label``: the label is the class name where the list gives one) and
``features.json`` (what made them). Work is committed in parts (``parts/part-NNNNNN.npy`` then its
``.csv``, each written atomically, the CSV last): a killed run resumes where it stopped, and a rerun
over a folder with new videos computes only the new ones. ONNX exports work when they output the
embedding (an output named ``pre_logits``, or ``features`` for ``--per-segment``); ``stnet export``
writes logits only, so for those the checkpoint is needed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stnet.argtypes import int_arg
from stnet.config import Config
from stnet.datasets import ClipSpec, Sample, VideoClipDataset, build_dataset, eval_views
from stnet.errors import DataError, OSFailure, UserError
from stnet.fileio import atomic_path, atomic_write_bytes, folder_lock, refuse_overwriting_inputs

GENERATOR = "stnet.features"
FEATURES_JSON = "features.json"
INDEX_CSV = "index.csv"
PARTS = "parts"
PART_ROWS = 256  # rows per committed part: what a killed run can lose at most
EMBEDDING_OUTPUT, SEGMENT_OUTPUT = "pre_logits", "features"  # ONNX output names features reads
FORMATS = ("npy", "safetensors")


class FeatureError(UserError):
    """Features cannot be made as asked (an export without the embedding, an output folder in use)."""


# ----------------------------------------------------------------------------------------------------
# Models: clips → rows
# ----------------------------------------------------------------------------------------------------


@dataclass
class Embedder:
    """A model as features uses it: ``run(clips)`` maps float32 ``(B, T, 3N, S, S)`` to ``(B, D)`` (the
    clip embedding) or ``(B, T, C)`` (per segment)."""

    config: Config  # the model's evaluation input (checkpoint config, or the export's ModelInfo.config())
    class_names: list[str]
    run: Callable[[np.ndarray], np.ndarray]
    identity: dict[str, Any]  # what the rows depend on besides the views: file, its hash, the outputs

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec.from_config(self.config)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise OSFailure(e, path, "reading") from None
    return digest.hexdigest()


def embed_clips(model: torch.nn.Module, clips: torch.Tensor, per_segment: bool = False) -> torch.Tensor:
    """The rows of a batch of clips: ``forward_head(forward_features(x), pre_logits=True)`` ``(B, D)``,
    or with ``per_segment`` the segment features ``(B, T, C)``."""
    features = model.forward_features(clips)  # type: ignore[operator]
    if per_segment:
        return features.transpose(1, 2)
    return model.forward_head(features, pre_logits=True)  # type: ignore[operator]


def checkpoint_embedder(
    checkpoint: str | Path,
    *,
    config: str | None = None,
    overrides: Sequence[str] = (),
    classes_file: str | None = None,
    per_segment: bool = False,
) -> Embedder:
    """An :class:`Embedder` running a checkpoint in PyTorch fp32 on the CPU."""
    from stnet.checkpoint import eval_model

    model, cfg, names = eval_model(checkpoint, config, overrides, classes_file)

    @torch.no_grad()
    def run(clips: np.ndarray) -> np.ndarray:
        return embed_clips(model, torch.from_numpy(clips), per_segment).float().numpy()

    identity = {"model": str(Path(checkpoint).resolve()), "sha256": _sha256(Path(checkpoint))}
    return Embedder(cfg, names, run, identity)


def onnx_embedder(path: str | Path, *, per_segment: bool = False, threads: int | None = None) -> Embedder:
    """An :class:`Embedder` for an ONNX export that outputs ``pre_logits`` (or ``features`` for
    ``per_segment``); other exports are refused with a one-line FeatureError saying why."""
    import onnxruntime as ort

    from stnet.runners import META_KEY, ExportError, ModelInfo

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model not found: {path}")
    wanted = SEGMENT_OUTPUT if per_segment else EMBEDDING_OUTPUT
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged or foreign file: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path} is not a readable ONNX model: {first}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if META_KEY not in meta:
        raise ExportError(f"{path} was not exported by stnet (it has no 'stnet' metadata)")
    outputs = [o.name for o in session.get_outputs()]
    if wanted not in outputs:
        what = "per-segment features" if per_segment else "the clip embedding (pre-logits)"
        raise FeatureError(
            f"{path} outputs {', '.join(outputs)} only, not {what} (an output named {wanted!r}): "
            "features need the layer before the classifier, so use the checkpoint it was exported from "
            "(--checkpoint FILE)"
        )
    info = ModelInfo.from_json(meta[META_KEY])
    name = session.get_inputs()[0].name

    def run(clips: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([wanted], {name: clips})[0], np.float32)

    identity = {"model": str(path.resolve()), "sha256": _sha256(path), "output": wanted}
    return Embedder(info.config(), list(info.class_names), run, identity)


# ----------------------------------------------------------------------------------------------------
# What to embed
# ----------------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The videos to embed: a dataset over them, the key (path) and label name of each."""

    dataset: VideoClipDataset
    keys: list[str]
    labels: list[str]  # "" where unknown


def video_inputs(paths: Sequence[str | Path], spec: ClipSpec, views: tuple[int, int] | None) -> Inputs:
    """Video files and folders (searched recursively, as ``stnet predict``); labels unknown."""
    from stnet.inference import find_videos

    videos = []
    for video in find_videos(paths):
        if video.is_dir():
            raise DataError(f"{video}: no video found in this folder")
        if not video.is_file():
            raise DataError(f"{video}: no such file")
        videos.append(video)
    unique = list(dict.fromkeys(videos))
    dataset = VideoClipDataset([Sample(v, 0) for v in unique], spec, "val", test_views=views, augment=False)
    return Inputs(dataset, [str(v) for v in unique], [""] * len(unique))


def split_inputs(
    dataset_path: str | Path,
    split: str,
    model_config: Config,
    class_names: Sequence[str],
    views: tuple[int, int] | None,
) -> Inputs:
    """Every video of a prepared split, with its label's class name, read as ``model_config`` says."""
    cfg = dataclasses.replace(model_config, dataset_path=str(dataset_path))
    dataset = build_dataset(cfg, split, test_views=views, augment=False, model_source="the model")
    names = dataset.classes or list(class_names)
    labels = [names[s.label] if 0 <= s.label < len(names) else "" for s in dataset.samples]
    return Inputs(dataset, [str(s.path) for s in dataset.samples], labels)


class _Views(Dataset):
    """Item i of ``todo``: ``(position, views, weights, error)``; an unreadable video gives its error."""

    def __init__(self, dataset: VideoClipDataset, todo: Sequence[int]):
        self.dataset, self.todo = dataset, list(todo)

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
        index = self.todo[i]
        try:
            views, _, _, weights = self.dataset.distinct_views(index)
        except (DataError, OSError) as e:
            return index, None, None, str(e)
        return index, views.numpy(), weights.numpy().astype(np.float64), None


# ----------------------------------------------------------------------------------------------------
# Parts, resuming, merging
# ----------------------------------------------------------------------------------------------------


def _csv_text(rows: Sequence[Sequence[object]], header: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@dataclass
class _Done:
    """Rows already computed: key → (array file, row), and each key's label."""

    rows: dict[str, tuple[Path, int]] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


def _committed(out: Path, fmt: str) -> _Done:
    """The rows of the previous final output (if complete) and of every committed part."""
    done = _Done()
    final, index = out / f"features.{fmt}", out / INDEX_CSV
    if final.is_file() and index.is_file():
        for record in _read_csv(index):
            done.rows[record["path"]] = (final, int(record["row"]))
            done.labels[record["path"]] = record["label"]
    parts = out / PARTS
    for table in sorted(parts.glob("part-*.csv")) if parts.is_dir() else []:
        array = table.with_suffix(".npy")
        records = _read_csv(table)
        if not array.is_file() or len(_load_array(array)) != len(records):
            continue  # not committed: its rows are computed again
        for row, record in enumerate(records):
            done.rows[record["path"]] = (array, row)
            done.labels[record["path"]] = record["label"]
    return done


def _load_array(path: Path) -> np.ndarray:
    """A committed array: .npy memory-mapped, .safetensors (tensor ``features``) read whole."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    from safetensors.numpy import load_file

    return load_file(path)["features"]


def _remove_leftovers(parts: Path) -> None:
    """Temporary files of a killed run and arrays whose CSV (the commit) was never written."""
    if not parts.is_dir():
        return
    for tmp in parts.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
    for array in parts.glob("part-*.npy"):
        if not array.with_suffix(".csv").is_file():
            array.unlink(missing_ok=True)


def _commit_part(
    parts: Path, number: int, rows: list[np.ndarray], keys: list[str], labels: list[str]
) -> None:
    stem = parts / f"part-{number:06d}"
    with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack(rows).astype(np.float32))
    atomic_write_bytes(
        stem.with_suffix(".csv"), _csv_text(list(zip(keys, labels, strict=True)), ["path", "label"])
    )


def _merge(out: Path, fmt: str, keys: Sequence[str], done: _Done) -> tuple[int, tuple[int, ...]]:
    """Write the final array (rows in input order) and index.csv from the committed rows."""
    present = [k for k in keys if k in done.rows]
    arrays: dict[Path, np.ndarray] = {}

    def row_of(key: str) -> np.ndarray:
        file, row = done.rows[key]
        if file not in arrays:
            arrays[file] = _load_array(file)
        return arrays[file][row]

    shape = (len(present), *row_of(present[0]).shape) if present else (0,)
    final = out / f"features.{fmt}"
    if fmt == "npy":
        with atomic_path(final) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            for i, key in enumerate(present):
                array[i] = row_of(key)
            array.flush()
            del array
    else:
        from safetensors.numpy import save

        data = (
            np.stack([row_of(k) for k in present]).astype(np.float32)
            if present
            else np.zeros(shape, np.float32)
        )
        atomic_write_bytes(final, save({"features": data}, metadata={"index": INDEX_CSV}))
    rows = [(i, key, done.labels.get(key, "")) for i, key in enumerate(present)]
    atomic_write_bytes(out / INDEX_CSV, _csv_text(rows, ["row", "path", "label"]))
    arrays.clear()
    return len(present), shape


def _check_out(out: Path, settings: dict[str, Any]) -> None:
    """A new or empty folder, or a features output made with the same settings (resumed)."""
    if out.exists() and not out.is_dir():
        raise FeatureError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(p.name != ".stnet.lock" for p in out.iterdir()):
        return
    try:
        previous = json.loads((out / FEATURES_JSON).read_text(encoding="utf-8"))
        ours = previous.get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FeatureError(f"--out {out} is a non-empty folder that is not a features output; choose another")
    before = previous.get("settings", {})
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        raise FeatureError(
            f"{out} holds features made with other settings ({', '.join(changed)} differ): rows of both "
            "would be mixed; use another --out folder"
        )


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


@dataclass
class FeatureReport:
    out: Path
    rows: int
    shape: tuple[int, ...]
    computed: int  # videos embedded by this run (the others were committed before)
    errors: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "rows": self.rows,
            "shape": list(self.shape),
            "computed": self.computed,
            "errors": self.errors,
        }


def extract(
    embedder: Embedder,
    inputs: Inputs,
    out: str | Path,
    *,
    views: tuple[int, int] = (1, 1),
    per_segment: bool = False,
    fmt: str = "npy",
    batch: int = 8,
    workers: int = 0,
    progress: bool = True,
    on_error: Callable[[str], Any] | None = None,
) -> FeatureReport:
    """Embed every input not committed yet under ``out``, then write the final array and index.

    A video that cannot be read is reported through ``on_error`` and left out (a rerun tries it again)."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise FeatureError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    settings: dict[str, Any] = {
        **embedder.identity,
        "spec": dataclasses.asdict(embedder.spec),
        "clips": views[0],
        "crops": views[1],
        "per_segment": per_segment,
        "format": fmt,
    }
    settings = json.loads(json.dumps(settings))  # as features.json holds them (lists, not tuples)
    _check_out(out, settings)
    errors: list[str] = []
    with folder_lock(out, "stnet features"):
        meta = {"generator": GENERATOR, "complete": False, "settings": settings}
        atomic_write_bytes(out / FEATURES_JSON, (json.dumps(meta, indent=2) + "\n").encode())
        parts = out / PARTS
        _remove_leftovers(parts)
        done = _committed(out, fmt)
        todo = [i for i, key in enumerate(inputs.keys) if key not in done.rows]
        numbers = [int(p.stem.split("-")[1]) for p in parts.glob("part-*.csv")] if parts.is_dir() else []
        number = max(numbers, default=-1) + 1
        loader = DataLoader(
            _Views(inputs.dataset, todo),
            batch_size=batch,
            num_workers=workers,
            collate_fn=list,
            shuffle=False,
        )
        rows: list[np.ndarray] = []
        keys: list[str] = []
        labels: list[str] = []
        bar = tqdm(total=len(todo), unit="video", desc="features", disable=not progress, file=sys.stderr)
        computed = 0
        for items in loader:
            good = [item for item in items if item[3] is None]
            for index, _, _, error in items:
                if error is not None:
                    message = error if inputs.keys[index] in error else f"{inputs.keys[index]}: {error}"
                    errors.append(message)
                    if on_error is not None:
                        on_error(message)
            if good:
                clips = np.concatenate([item[1] for item in good])
                embedded = embedder.run(clips)
                start = 0
                for index, item_views, weights, _ in good:
                    stop = start + len(item_views)
                    w = weights.reshape(-1, *([1] * (embedded.ndim - 1)))
                    rows.append(((embedded[start:stop] * w).sum(axis=0) / w.sum()).astype(np.float32))
                    keys.append(inputs.keys[index])
                    labels.append(inputs.labels[index])
                    start = stop
                computed += len(good)
            bar.update(len(items))
            if len(rows) >= PART_ROWS:
                _commit_part(parts, number, rows, keys, labels)
                number, rows, keys, labels = number + 1, [], [], []
        bar.close()
        if rows:
            _commit_part(parts, number, rows, keys, labels)
        done = _committed(out, fmt)
        count, shape = _merge(out, fmt, inputs.keys, done)
        for part in parts.glob("part-*") if parts.is_dir() else []:
            part.unlink(missing_ok=True)
        if parts.is_dir():
            parts.rmdir()
        meta.update({"complete": True, "rows": count, "shape": list(shape), "unreadable": len(errors)})
        atomic_write_bytes(out / FEATURES_JSON, (json.dumps(meta, indent=2) + "\n").encode())
    return FeatureReport(out, count, shape, computed, errors)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def cmd_features(args: argparse.Namespace, rest: Sequence[str]) -> int:
    if (args.model is None) == (args.checkpoint is None):
        raise FeatureError("give exactly one of --checkpoint FILE or --model FILE.onnx")
    if bool(args.videos) == bool(args.dataset_path):
        raise FeatureError("give video files/folders or --dataset_path DIR (a prepared dataset), not both")
    if args.model is not None:
        if rest:
            raise FeatureError(f"unexpected arguments: {' '.join(rest)} (config flags go with --checkpoint)")
        if not str(args.model).lower().endswith(".onnx"):
            raise FeatureError(
                f"{args.model}: features read ONNX exports (.onnx) or checkpoints (--checkpoint)"
            )
        embedder = onnx_embedder(args.model, per_segment=args.per_segment, threads=args.threads)
        model_file = args.model
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        embedder = checkpoint_embedder(
            args.checkpoint,
            config=args.config,
            overrides=rest,
            classes_file=args.classes,
            per_segment=args.per_segment,
        )
        model_file = args.checkpoint
    views = eval_views(args.clips, args.crops)
    if args.dataset_path:
        inputs = split_inputs(args.dataset_path, args.split, embedder.config, embedder.class_names, views)
        sources = [args.dataset_path]
    else:
        inputs = video_inputs(args.videos, embedder.spec, views)
        sources = list(args.videos)
    refuse_overwriting_inputs([args.out], [*sources, model_file])

    def on_error(message: str) -> None:
        print(f"stnet: error: {message}", file=sys.stderr, flush=True)

    report = extract(
        embedder,
        inputs,
        args.out,
        views=(args.clips, args.crops),
        per_segment=args.per_segment,
        fmt=args.format,
        batch=args.batch,
        workers=args.workers,
        progress=not args.quiet,
        on_error=on_error,
    )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        shape = "x".join(map(str, report.shape))
        print(
            f"{report.rows} rows ({shape}, {report.computed} computed now) in "
            f"{report.out / f'features.{args.format}'}, index in {report.out / INDEX_CSV}"
        )
    if report.errors:
        print(f"stnet: {len(report.errors)} of the videos could not be read", file=sys.stderr)
        return 1
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``features`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "features",
        help="clip embeddings (or per-segment features) of videos or a prepared split, as .npy + index CSV",
        description="Embed each video (eval sampling, averaged over --clips x --crops views): the clip "
        "embedding forward_head(pre_logits=True), or with --per-segment the backbone feature of each "
        "segment. Writes OUT/features.npy (or .safetensors), OUT/index.csv (row, path, label) and "
        "OUT/features.json. Resumable: rows already committed are not computed again.",
    )
    p.add_argument("--config", "--config_path", dest="config", default=None, help="config YAML (optional)")
    p.add_argument("videos", nargs="*", metavar="VIDEO_OR_DIR", help="video files or folders")
    p.add_argument("--dataset_path", "--dataset-path", default=None, help="or: a prepared dataset folder")
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="its split (default val)")
    p.add_argument("--checkpoint", default=None, help="checkpoint or weights file (runs in PyTorch)")
    p.add_argument("--model", default=None, help="or: an ONNX export that outputs pre_logits")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or one to resume)")
    p.add_argument(
        "--per-segment",
        "--per_segment",
        dest="per_segment",
        action="store_true",
        help="per-segment backbone features (T, C) per video instead of the clip embedding",
    )
    p.add_argument("--clips", type=int_arg(1), default=1, help="temporal clips per video (default 1)")
    p.add_argument(
        "--crops", type=int, choices=(1, 3, 10), default=1, help="spatial crops per clip (default 1)"
    )
    p.add_argument("--batch", type=int_arg(1), default=8, help="videos per forward pass (default 8)")
    p.add_argument(
        "--workers", type=int_arg(0), default=0, help="decoding processes (default 0: in this one)"
    )
    p.add_argument("--format", choices=FORMATS, default="npy", help="array file format (default npy)")
    p.add_argument("--classes", default=None, help="class names file, for weights that do not carry them")
    p.add_argument(
        "--threads", type=int_arg(1), default=None, help="threads of the model (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_features)
