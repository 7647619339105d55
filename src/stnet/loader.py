"""The DataLoader around stnet's datasets: samplers, worker seeding, the evaluation collate, and the
move of a batch to the device.

Workers hand over uint8 clips (a quarter of float32's bytes, no normalisation on the CPU); the loops
call :func:`to_model_input`, which copies a batch to the device (from pinned memory, without blocking,
on CUDA) and normalises it there with the loader's :class:`~stnet.transforms.Normalise`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from stnet.config import Config
from stnet.datasets import VideoClipDataset
from stnet.distributed import DistInfo
from stnet.errors import DataError
from stnet.transforms import Normalise


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python and NumPy from the worker's torch seed.

    torch gives each worker ``base_seed + worker_id`` (base_seed drawn from the loader's generator), so
    workers differ from each other and from one epoch to the next, and a seeded loader repeats. (stnet's
    own datasets do not need this: they draw every item's augmentation from (seed, epoch, index).)
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ShardSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding: a distributed
    evaluation then counts every video exactly once (processes may see one sample more or less)."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size, self.num_replicas, self.rank = size, num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))


class EvalBatch(NamedTuple):
    """A batch of evaluation: the distinct views of its readable videos, one row each, and the videos
    that could not be read."""

    views: torch.Tensor | None  # (rows, T, 3N, S, S); None when no video of the batch could be read
    video_ids: torch.Tensor  # (rows,) dataset index of each row's video
    view_ids: torch.Tensor  # (rows,) position of the view among its video's K·C views
    weights: torch.Tensor  # (rows,) how many identical views the row stands for
    labels: torch.Tensor  # (rows,)
    unreadable: list[tuple[int, int, str]]  # (dataset index, listed label or -1, why)


class Indexed(Dataset):
    """Items ``(index, views, label, view_ids, weights)`` for evaluation, which must know which video
    and view each score belongs to; each distinct view comes once (see
    :meth:`VideoClipDataset.distinct_views`). A video that cannot be read becomes
    ``(index, None, listed label, None, why)``: counted by the evaluation, not fatal."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        try:
            if isinstance(self.dataset, VideoClipDataset):
                views, label, view_ids, weights = self.dataset.distinct_views(index)
            else:
                clip, label = self.dataset[index]
                views = clip if clip.ndim == 5 else clip.unsqueeze(0)
                view_ids, weights = torch.arange(len(views)), torch.ones(len(views), dtype=torch.long)
        except (DataError, OSError) as e:
            known = self.dataset.label_of(index) if isinstance(self.dataset, VideoClipDataset) else -1
            return index, None, known, None, str(e)
        return index, views, label, view_ids, weights


def collate_eval(items: list[tuple]) -> EvalBatch:
    """Concatenate the items' views into one batch of rows (videos may have different view counts)."""
    good = [it for it in items if it[1] is not None]
    bad = [(int(it[0]), int(it[2]), str(it[4])) for it in items if it[1] is None]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return EvalBatch(None, empty, empty, empty, empty, bad)
    counts = [len(it[1]) for it in good]
    return EvalBatch(
        torch.cat([it[1] for it in good]),
        torch.repeat_interleave(torch.tensor([it[0] for it in good]), torch.tensor(counts)),
        torch.cat([it[3] for it in good]),
        torch.cat([it[4] for it in good]),
        torch.repeat_interleave(torch.tensor([int(it[2]) for it in good]), torch.tensor(counts)),
        bad,
    )


class ClipLoader(DataLoader):
    """A DataLoader that knows how its clips become the model's input: ``normalise`` (None when its
    dataset hands over normalised float clips already)."""

    def __init__(self, dataset: Dataset, *, normalise: Normalise | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.normalise = normalise


def to_model_input(x: torch.Tensor, device: torch.device, normalise: Normalise | None) -> torch.Tensor:
    """A batch of clips as the model's input on ``device``: copied there as it comes (uint8 from a
    :class:`ClipLoader`: 4x fewer bytes than float32; ``non_blocking`` overlaps the copy from pinned
    memory on CUDA), then normalised on the device. Float batches are moved unchanged."""
    x = x.to(device, non_blocking=True)
    if x.is_floating_point():
        return x
    if normalise is None:
        raise TypeError(f"a {x.dtype} batch needs the normalisation of the loader that made it")
    return normalise(x)


def loader_normalise(loader: Any) -> Normalise | None:
    """The normalisation a loader's batches need (None for a plain iterable of float batches)."""
    return getattr(loader, "normalise", None)


def build_loader(
    dataset: Dataset,
    cfg: Config,
    dist: DistInfo,
    device: torch.device,
    *,
    train: bool,
    epoch: int = 0,
    batch_size: int | None = None,
) -> DataLoader:
    """A DataLoader for one epoch (a :class:`ClipLoader`: stnet datasets' clips come as uint8).

    Training: shuffled by ``(seed, epoch)`` and split over processes (DistributedSampler), incomplete last
    batch dropped. Evaluation: every video exactly once over all processes (rank r takes r, r+W, ...,
    no padding), nothing dropped, items carry their index.
    """
    normalise = None
    if isinstance(dataset, VideoClipDataset):
        normalise = Normalise.from_spec(dataset.spec)
        dataset = dataset.as_uint8()
    if train:
        sampler: Any = DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.seed
        )
        sampler.set_epoch(epoch)
    else:
        dataset = Indexed(dataset)
        sampler = ShardSampler(len(dataset), dist.world_size, dist.rank)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)  # stnet datasets draw augmentations from (seed, epoch, index)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + dist.rank)
    return ClipLoader(
        dataset,
        batch_size=batch_size or cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        drop_last=train,
        worker_init_fn=seed_worker,
        generator=generator,
        # fresh workers each epoch, seeded from (seed, epoch, rank): a resumed run then draws exactly
        # the augmentations an uninterrupted one would have
        persistent_workers=False,
        collate_fn=None if train else collate_eval,
        normalise=normalise,
    )
