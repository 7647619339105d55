"""Training and evaluation loops: one epoch of SGD, one pass of evaluation, and the run that ties them.

Read top to bottom: :func:`fit` sets up the model, optimiser and checkpoints, then alternates
:func:`train_one_epoch` and :func:`evaluate`. Everything that varies between runs comes from the
:class:`~stnet.config.Config`; the datasets come in already built (see :mod:`stnet.datasets`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from stnet.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointDir,
    CheckpointError,
    load_checkpoint,
    remove_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stnet.config import MODEL_KEYS, Config
from stnet.datasets import VideoClipDataset, frame_counts
from stnet.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean_,
    all_reduce_sum,
    barrier,
    gather_objects,
    process_device,
    wrap_ddp,
)
from stnet.errors import StnetError
from stnet.fileio import atomic_write_bytes, folder_lock
from stnet.loader import build_loader, loader_normalise, to_model_input
from stnet.metrics import EvalResult, ScoreAccumulator
from stnet.model import build_model, to_channels_last
from stnet.optim import base_lr, build_optimizer, global_batch, lr_at, lr_line, set_lr
from stnet.plots import plot_curves
from stnet.runtime import autocast, autocast_dtype, log_stderr, resolve_device, seed_everything
from stnet.weights import load_weights, read_weights


class TrainingError(StnetError, RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


# ----------------------------------------------------------------------------------------------------
# Progress output
# ----------------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal; plain periodic lines otherwise (CI logs, files)."""

    def __init__(self, total: int, desc: str, enabled: bool, interval_s: float = 30.0):
        self.total, self.desc, self.enabled, self.interval_s = total, desc, enabled, interval_s
        self.bar = None
        self.count = 0
        self.last_print = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)

    def update(self, **metrics: float) -> None:
        self.count += 1
        if not self.enabled:
            return
        text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last_print >= self.interval_s or self.count == self.total:
            self.last_print = time.monotonic()
            print(f"{self.desc} [{self.count}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation
# ----------------------------------------------------------------------------------------------------


@dataclass
class EpochStats:
    loss: float
    top1: float
    clips: int
    seconds: float
    data_wait: float  # fraction of the epoch spent waiting for the next batch
    lrs: list[float]  # the lr of every optimizer step

    @property
    def clips_per_s(self) -> float:
        return self.clips / max(self.seconds, 1e-9)


class Meter:
    """An epoch's sums of loss, correct predictions, clips and data wait.

    The loss and correct counts stay on the device, so adding a micro-batch costs no host-device sync;
    :meth:`stats` reads them once, summed over the processes.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss = torch.zeros((), dtype=torch.float64, device=device)  # sum of per-clip losses
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.clips = 0
        self.waited = 0.0
        self.lrs: list[float] = []
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.loss += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.clips += n

    def stats(self, dist: DistInfo) -> EpochStats:
        seconds = time.perf_counter() - self.started
        local = torch.stack([self.loss, self.correct]).tolist()
        loss, correct, clips, waited = all_reduce_sum([*local, self.clips, self.waited], dist, self.device)
        if clips == 0:
            raise TrainingError("the training split has fewer clips than one batch; lower --batch_size")
        wait_share = waited / dist.world_size / max(seconds, 1e-9)
        return EpochStats(loss / clips, correct / clips, int(clips), seconds, wait_share, self.lrs)


def _timed(loader: Iterable) -> Iterator[tuple[float, Any]]:
    """Yield ``(seconds waited for the item, item)``."""
    it = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        yield time.perf_counter() - start, item


def _grad_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients in the backward pass unless inside ``no_sync``: a micro-batch that does
    not end an accumulation group runs its forward *and* backward inside one such context."""
    if sync or not isinstance(model, DDP):
        return contextlib.nullcontext()
    return model.no_sync()


def _step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip_grad_norm: float
) -> None:
    """One optimizer step on the accumulated gradients, then zero them.

    ``scaler`` is disabled (a pass-through) unless training in fp16. Under DDP the gradients are views
    into its communication buckets (see :func:`stnet.distributed.wrap_ddp`), so they are zeroed in
    place rather than set to None.
    """
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=not isinstance(model, DDP))


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    run: RunState,
    *,
    epoch: int,
    lr: float,
    device: torch.device,
    dist: DistInfo,
    scaler: torch.amp.GradScaler,
    amp: contextlib.AbstractContextManager,
    on_step: Callable[[int, float, float], None] | None = None,
) -> EpochStats:
    """One pass over ``loader``; the lr follows the schedule at every optimizer step.

    ``amp`` is the autocast context (:func:`autocast`); ``on_step(step, loss, lr)`` is called after every
    optimizer step with the run's step count and the step's mean loss, the one value read from the
    device per step.
    """
    model.train()
    if cfg.freeze_bn:  # normalise with the running statistics; the affine weights still learn
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    accumulate = cfg.accumulate_steps
    steps = len(loader) // accumulate  # a trailing incomplete accumulation group is dropped
    progress = Progress(steps, f"epoch {epoch + 1}/{cfg.num_epochs}", dist.is_main)
    meter = Meter(device)
    step_loss = torch.zeros((), device=device)
    optimizer.zero_grad(set_to_none=not isinstance(model, DDP))
    normalise = loader_normalise(loader)
    for i, (wait, (x, y)) in enumerate(_timed(loader)):
        if i >= steps * accumulate:
            break
        meter.waited += wait
        x, y = to_model_input(x, device, normalise), y.to(device, non_blocking=True)
        last_micro = (i + 1) % accumulate == 0
        with _grad_sync(model, last_micro):
            with amp:
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            scaler.scale(loss / accumulate).backward()
        meter.add(loss, logits, y)
        step_loss += loss.detach()
        if not last_micro:
            continue
        step = i // accumulate
        mean_loss = step_loss.item() / accumulate  # the step's one host-device sync
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the loss became {mean_loss} at epoch {epoch + 1}, step {step + 1}; "
                "lower --lr, or use --precision fp32"
            )
        current_lr = lr_at(cfg, lr, epoch, step, steps)
        set_lr(optimizer, current_lr)
        _step(model, optimizer, scaler, cfg.clip_grad_norm)
        run.step += 1
        meter.lrs.append(current_lr)
        step_loss.zero_()
        if on_step is not None:
            on_step(run.step, mean_loss, current_lr)
        progress.update(loss=mean_loss, lr=current_lr)
    progress.close()
    return meter.stats(dist)


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    loader: Iterable,
    batches: int,
    *,
    device: torch.device,
    dist: DistInfo,
    amp_dtype: torch.dtype | None = None,
) -> int:
    """Set every BatchNorm's running mean and variance to the average of its batch statistics over
    ``batches`` training batches (PySlowFast's "precise BN"); returns the batches used.

    A running average with momentum 0.1 trails weights that are still moving, so early or small-batch
    evaluations can sit near chance while training accuracy is high; recomputing the statistics under
    the current weights removes that lag. Parameters and the training state are untouched.
    """
    net = _unwrap(model)
    bns = _batchnorms(net)
    if not bns or batches <= 0:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = net.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches that follow
    net.train()
    used = 0
    normalise = loader_normalise(loader)
    try:
        for x, _y in itertools.islice(loader, batches):
            with autocast(device, amp_dtype):
                net(to_model_input(x, device, normalise))
            used += 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        net.train(was_training)
    sync_bn_stats(net, dist)
    return used


def sync_bn_stats(model: nn.Module, dist: DistInfo) -> None:
    """Average the BatchNorm running statistics over the processes.

    Each process updates them from its own batches, so without this the processes would evaluate (and
    rank 0 would save) statistics of a single process's last batches.
    """
    with torch.no_grad():
        all_reduce_mean_(_bn_statistics(model), dist)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DDP) else model


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _bn_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The running means and variances of every BatchNorm (DDP-wrapped or not)."""
    return [t for bn in _batchnorms(_unwrap(model)) for t in (bn.running_mean, bn.running_var)]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    dist: DistInfo,
    amp_dtype: torch.dtype | None = None,
    desc: str = "eval",
    skip_unreadable: bool = False,
) -> EvalResult | None:
    """Scores for every video of ``loader`` (batches of :class:`~stnet.loader.EvalBatch`, from
    ``build_loader(..., train=False)``), softmax-averaged over each video's views.

    Each process sums its videos' views as they come (one row per video); rank 0 gathers those rows and
    returns the result, the other ranks return None. A video that cannot be read is named once on
    stderr and counts as a miss, or is left out with ``skip_unreadable``.
    """
    model.eval()
    acc = ScoreAccumulator()
    fate = "left out (--skip_unreadable)" if skip_unreadable else "counted as a miss"
    progress = Progress(len(loader), desc, dist.is_main)
    normalise = loader_normalise(loader)
    for batch in loader:
        for index, label, why in batch.unreadable:
            print(f"unreadable video, {fate}: {why}", file=sys.stderr, flush=True)
            acc.add_unreadable([index], [label])
        if batch.views is not None:
            with autocast(device, amp_dtype):
                logits = model(to_model_input(batch.views, device, normalise)).float().cpu()
            acc.add(batch.video_ids, logits, batch.labels, batch.view_ids, batch.weights)
        progress.update()
    progress.close()
    acc = gather_scores(acc, dist)
    if acc is None:
        return None
    if acc.num_videos == 0:
        raise TrainingError(f"none of the {acc.num_unreadable} videos to evaluate could be read")
    return acc.result(skip_unreadable=skip_unreadable)


def gather_scores(acc: ScoreAccumulator, dist: DistInfo) -> ScoreAccumulator | None:
    """All processes' per-video scores merged on rank 0 (None on the other ranks): each sends its own
    videos' rows, never every view's."""
    states = gather_objects(acc.state(), dist)
    if states is None:
        return None
    merged = ScoreAccumulator.from_state(states[0])
    for state in states[1:]:
        merged.merge(ScoreAccumulator.from_state(state))
    return merged


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


@dataclass
class RunDirs:
    """Where a run writes: everything under ``output_dir`` unless the reference keys say otherwise."""

    out: Path
    checkpoints: Path
    tensorboard: Path

    @classmethod
    def from_config(cls, cfg: Config) -> RunDirs:
        out = Path(cfg.output_dir)
        return cls(
            out,
            Path(cfg.checkpoint_path) if cfg.checkpoint_path else out / "checkpoints",
            Path(cfg.summary_dir) if cfg.summary_dir else out / "tensorboard",
        )

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def should_evaluate(cfg: Config, epoch: int) -> bool:
    """Evaluate after 1-based ``epoch``: from eval_start_epoch every eval_interval epochs, and the last."""
    if not cfg.run_eval:
        return False
    periodic = epoch >= cfg.eval_start_epoch and (epoch - cfg.eval_start_epoch) % cfg.eval_interval == 0
    return periodic or epoch == cfg.num_epochs


def _load_initial_weights(model: nn.Module, cfg: Config, log: Callable[[str], None]) -> None:
    if cfg.pre_res50:
        log(load_weights(model, cfg.pre_res50).summary())
    if cfg.finetune:
        tensors, _ = read_weights(cfg.finetune)
        fc = tensors.get("fc.weight")
        skip = fc is not None and tuple(fc.shape) != tuple(_unwrap(model).fc.weight.shape)
        if skip:
            log(
                f"finetune: the classifier of {cfg.finetune} has {fc.shape[0]} classes, this run "
                f"{cfg.class_num}: it starts fresh"
            )
        log(load_weights(model, cfg.finetune, skip_classifier=skip).summary())


def _resume_path(cfg: Config, dirs: RunDirs) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        return dirs.checkpoints / "last.pt" if (dirs.checkpoints / "last.pt").is_file() else None
    return Path(cfg.resume)


def _restore(
    state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: Config
) -> RunState:
    saved = state["config"]
    diff = [f"{k} {saved.get(k)} → {getattr(cfg, k)}" for k in MODEL_KEYS if saved.get(k) != getattr(cfg, k)]
    if diff:
        raise CheckpointError(
            "the checkpoint was trained with another model (" + ", ".join(diff) + "); "
            "use --finetune to start from its weights instead"
        )
    _unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return RunState(
        state["epoch"], state["step"], state["best_top1"], state["best_epoch"], list(state["history"])
    )


def _write_history(path: Path, history: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in history).encode())


def _silent(_message: str) -> None:
    pass


def check_labels(class_num: int, splits: dict[str, Dataset | None]) -> None:
    """Refuse a split whose largest label is not a class of the model, before anything is trained
    (otherwise the loss fails mid-epoch with "Target 7 is out of bounds")."""
    for name, dataset in splits.items():
        labels = [s.label for s in getattr(dataset, "samples", ())]
        top = max(labels, default=-1)  # -1: labels that only the files hold (the reference's pickles)
        if top < class_num:
            continue
        fix = "fix the labels in its list"
        if getattr(dataset, "classes", None) is None:
            fix += f" or set --class_num {top + 1}"
        raise TrainingError(
            f"the {name} split has label {top}, but the model has {class_num} classes "
            f"(labels 0..{class_num - 1}): {fix}"
        )


def count_video_frames(
    datasets: Iterable[Dataset | None], dist: DistInfo, say: Callable[[str], None]
) -> None:
    """Count the frames of every raw video in ``datasets`` once, before any loader starts.

    Each epoch's loader starts fresh worker processes (see :func:`stnet.loader.build_loader`), which
    would otherwise scan every video's packets again; the processes split the videos between them and
    share the counts.
    """
    sets = [d for d in datasets if isinstance(d, VideoClipDataset)]
    paths = sorted({p for d in sets for p in d.uncounted_videos()})
    if not paths:
        return
    started = time.perf_counter()
    mine = paths[dist.rank :: dist.world_size]
    progress = Progress(len(mine), "counting video frames", dist.is_main)
    counts = frame_counts(mine, on_each=progress.update)
    progress.close()
    merged = {path: n for part in all_gather_objects(counts, dist) for path, n in part.items()}
    for d in sets:
        d.set_frame_counts(merged)
    say(f"counted the frames of {len(merged)} videos in {time.perf_counter() - started:.1f} s")


@contextlib.contextmanager
def _run_lock(dirs: RunDirs, dist: DistInfo) -> Iterator[None]:
    """The main process locks the output (and checkpoint) folder for the whole run, then removes the
    temporary files an earlier killed run of this folder left; the lock guarantees they are not a live
    run's."""
    if not dist.is_main:
        yield
        return
    with contextlib.ExitStack() as stack:
        folders = [dirs.out]
        if dirs.out.resolve() not in (dirs.checkpoints.resolve(), *dirs.checkpoints.resolve().parents):
            folders.append(dirs.checkpoints)
        for folder in folders:
            stack.enter_context(folder_lock(folder, "training run"))
        remove_temp_files(dirs.out, _RUN_FILES)
        remove_temp_files(dirs.checkpoints, CHECKPOINT_FILES)
        yield


_RUN_FILES = re.compile(r"metrics\.jsonl|config\.yaml|curves\.png")


def fit(
    cfg: Config,
    train_set: Dataset,
    val_set: Dataset | None,
    class_names: list[str],
    *,
    dist: DistInfo | None = None,
    log: Callable[[str], None] = log_stderr,
) -> RunState:
    """Train ``cfg.num_epochs`` epochs (continuing a resumed run), evaluating and checkpointing as
    configured. Returns the final :class:`RunState`. ``log`` gets the progress lines (default: stderr)."""
    dist = dist or DistInfo()
    say = log if dist.is_main else _silent
    check_labels(cfg.class_num, {"train": train_set, "val": val_set})
    dirs = RunDirs.from_config(cfg)
    with _run_lock(dirs, dist):
        return _train(cfg, train_set, val_set, class_names, dirs, dist, say)


def _train(
    cfg: Config,
    train_set: Dataset,
    val_set: Dataset | None,
    class_names: list[str],
    dirs: RunDirs,
    dist: DistInfo,
    say: Callable[[str], None],
) -> RunState:
    device = process_device(resolve_device(cfg.device), dist)
    seed_everything(cfg.seed, cfg.deterministic)
    model = build_model(cfg)
    _load_initial_weights(model, cfg, say)
    if dist.enabled and cfg.sync_bn:
        if device.type != "cuda":
            raise TrainingError(
                "sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU version); drop --sync_bn"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    amp_dtype = autocast_dtype(cfg.precision, device)
    amp = autocast(device, amp_dtype)
    model = model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    if dist.enabled:  # after the layout change: DDP's buckets take the parameters' strides
        model = wrap_ddp(model, device)
    lr = base_lr(cfg, dist.world_size)
    optimizer = build_optimizer(model, cfg, lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    run = RunState()
    resume = _resume_path(cfg, dirs)
    if resume is not None:
        run = _restore(load_checkpoint(resume), model, optimizer, scaler, cfg)
        say(f"resumed from {resume}: {run.epoch} epochs done, best top-1 {max(run.best_top1, 0):.4f}")
    if run.epoch >= cfg.num_epochs:
        say(f"nothing to do: {run.epoch} of {cfg.num_epochs} epochs are done")
        return run

    writer = None
    if dist.is_main:
        dirs.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dirs.out / "config.yaml", cfg.to_yaml().encode())
        _write_history(dirs.metrics, run.history)
        writer = _tensorboard(dirs.tensorboard)
    ckpts = CheckpointDir(dirs.checkpoints, cfg.keep_checkpoint_max)
    say(
        f"training StNet-R{cfg.depth} on {len(train_set)} clips ({len(class_names)} classes) on {device}"  # type: ignore[arg-type]
        f"{f' × {dist.world_size} processes' if dist.enabled else ''}, precision "
        f"{str(amp_dtype).removeprefix('torch.') if amp_dtype else 'fp32'}, "
        f"{len(train_set) // global_batch(cfg, dist.world_size)} steps/epoch"  # type: ignore[arg-type]
    )
    say(lr_line(cfg, dist.world_size))
    count_video_frames([train_set, val_set], dist, say)

    def on_step(step: int, loss: float, current_lr: float) -> None:
        if writer is not None:
            writer.add_scalar("train/loss_step", loss, step)
            writer.add_scalar("train/lr", current_lr, step)

    started = time.perf_counter()
    for epoch in range(run.epoch, cfg.num_epochs):
        stats = train_one_epoch(
            model,
            build_loader(train_set, cfg, dist, device, train=True, epoch=epoch),
            optimizer,
            cfg,
            run,
            epoch=epoch,
            lr=lr,
            device=device,
            dist=dist,
            scaler=scaler,
            amp=amp,
            on_step=on_step,
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": run.step,
            "lr": stats.lrs[0] if stats.lrs else 0.0,
            "train_loss": stats.loss,
            "train_top1": stats.top1,
            "clips_per_s": stats.clips_per_s,
            "data_wait": stats.data_wait,
            "epoch_seconds": stats.seconds,
        }
        improved = False
        sync_bn_stats(model, dist)  # what is evaluated and saved: the processes' average
        if val_set is not None and should_evaluate(cfg, epoch + 1):
            record.update(_validate(model, cfg, train_set, val_set, epoch, device, dist, amp_dtype))
            if "val_top1" in record:  # rank 0's: it alone records, compares and saves
                improved = record["val_top1"] >= run.best_top1  # ties update, as the reference
                if improved:
                    run.best_top1, run.best_epoch = record["val_top1"], epoch + 1
        run.epoch = epoch + 1
        run.history.append(record)
        if dist.is_main:
            _save(cfg, ckpts, run, model, optimizer, scaler, improved, class_names)
            _write_history(dirs.metrics, run.history)
            _log_epoch(writer, record, say)
        barrier(dist)
    if dist.enabled:
        _check_replicas(model, dist, device, say)
    if dist.is_main:
        _finish(dirs, run, writer, time.perf_counter() - started, say)
    return run


def _validate(
    model: nn.Module,
    cfg: Config,
    train_set: Dataset,
    val_set: Dataset,
    epoch: int,
    device: torch.device,
    dist: DistInfo,
    amp_dtype: torch.dtype | None,
) -> dict[str, Any]:
    """Evaluate on the val split (after precise BN, if configured): the record's val_* entries (on rank 0;
    the other ranks get only precise BN's count)."""
    record: dict[str, Any] = {}
    if cfg.precise_bn:
        record["precise_bn_batches"] = recompute_bn_stats(
            model,
            build_loader(train_set, cfg, dist, device, train=True, epoch=epoch),
            cfg.precise_bn,
            device=device,
            dist=dist,
            amp_dtype=amp_dtype,
        )
    result = evaluate(
        model,
        build_loader(val_set, cfg, dist, device, train=False),
        device=device,
        dist=dist,
        amp_dtype=amp_dtype,
        desc=f"val {epoch + 1}",
    )
    if result is None:  # not rank 0: the result is gathered there
        return record
    record.update(
        val_top1=result.top1,
        val_top5=result.top5,
        val_mean_class=result.mean_class_accuracy,
        val_videos=result.num_videos,
    )
    return record


def _check_replicas(
    model: nn.Module, dist: DistInfo, device: torch.device, say: Callable[[str], None]
) -> None:
    """Every process must end with the same weights and BatchNorm statistics; a mismatch means gradients
    (or the statistics, which every epoch averages) were not synchronised."""
    stats = _bn_statistics(model)
    with torch.no_grad():
        digest = {
            what: (float(sum(t.double().sum() for t in ts)), float(sum(t.double().abs().sum() for t in ts)))
            for what, ts in (("weights", list(model.parameters())), ("BatchNorm statistics", stats))
        }
    digests = all_gather_objects(digest, dist)
    for what in digest:
        if any(d[what] != digests[0][what] for d in digests):
            sums = [d[what][0] for d in digests]
            raise TrainingError(f"the {dist.world_size} processes ended with different {what} (sums {sums})")
    say(f"parameters and BatchNorm statistics identical on all {dist.world_size} processes")


def _tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        return None
    return SummaryWriter(str(directory))


def _save(
    cfg: Config,
    ckpts: CheckpointDir,
    run: RunState,
    model,
    optimizer,
    scaler,
    improved: bool,
    class_names: list[str],
) -> None:
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": run.epoch,
        "step": run.step,
        "best_top1": run.best_top1,
        "best_epoch": run.best_epoch,
        "history": run.history,
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "classes": list(class_names),  # so export/predict can name the classes without the dataset
    }
    save_checkpoint(ckpts.last, state)
    if cfg.save_checkpoint and run.epoch % cfg.save_checkpoint_epochs == 0:
        ckpts.save_periodic(run.epoch, state)
    if improved and cfg.save_best_ckpt:
        save_checkpoint(ckpts.best, state)


def _log_epoch(writer, record: dict, say: Callable[[str], None]) -> None:
    line = (
        f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, train top-1 {record['train_top1']:.4f}, "
        f"lr {record['lr']:.3g}, {record['clips_per_s']:.1f} clips/s, data wait {record['data_wait']:.1%}"
    )
    if "val_top1" in record:
        line += f" | val top-1 {record['val_top1']:.4f}, top-5 {record['val_top5']:.4f}"
    say(line)
    if writer is not None:
        for key, value in record.items():
            if key not in ("epoch", "step"):
                writer.add_scalar(f"epoch/{key}", value, record["epoch"])
        writer.flush()


def _finish(dirs: RunDirs, run: RunState, writer, seconds: float, say: Callable[[str], None]) -> None:
    if writer is not None:
        writer.close()
    plot_curves(run.history, dirs.out / "curves.png")
    minutes, secs = divmod(int(seconds), 60)
    say(f"Finished training. Time taken: {minutes} min {secs} sec")
    if run.best_top1 >= 0:
        say(f"best val top-1 {run.best_top1:.4f} at epoch {run.best_epoch} ({dirs.checkpoints / 'best.pt'})")
