"""Datasets and loaders: clip stores, reference pickles and frame folders, raw videos, views, seeding."""

from __future__ import annotations

import io
import json
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from stnet import cli
from stnet.clipstore import ClipWriter
from stnet.config import Config
from stnet.datasets import (
    ClipSpec,
    DataError,
    Sample,
    Split,
    VideoClipDataset,
    build_dataset,
    frame_files,
    read_reference_pickle,
)
from stnet.distributed import DistInfo
from stnet.loader import ShardSampler, build_loader
from stnet.sampling import kinetics_indices, ucf_indices
from videos import barcode_frame, read_barcode, write_video

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def solid(index: int, height: int = 128, width: int = 171) -> np.ndarray:
    """A frame of one colour that spells ``index`` in every pixel (survives any crop, flip and scale)."""
    return np.broadcast_to(np.array([4 * index, 255 - 4 * index, 128], np.uint8), (height, width, 3)).copy()


def write_store(path: Path, frames: list[np.ndarray]) -> Path:
    with ClipWriter(path, fps=25) as writer:
        for f in frames:
            writer.add_image(Image.fromarray(f), quality=95)
    return path


def pixels(clip: torch.Tensor, t: int, k: int) -> np.ndarray:
    """Frame k of segment t of a normalised clip as uint8-range HWC RGB."""
    chw = clip[t, 3 * k : 3 * k + 3].numpy().astype(np.float64)
    return (chw * STD[:, None, None] + MEAN[:, None, None]).transpose(1, 2, 0) * 255


def solid_indices(clip: torch.Tensor) -> list[list[int]]:
    """The index spelled by every frame of a clip of solid frames, checking all three channels."""
    T, C = clip.shape[:2]
    out = []
    for t in range(T):
        row = []
        for k in range(C // 3):
            r, g, b = pixels(clip, t, k).reshape(-1, 3).mean(axis=0)
            index = round(r / 4)
            assert abs(g - (255 - 4 * index)) < 3 and abs(b - 128) < 3, (r, g, b)
            row.append(index)
        out.append(row)
    return out


def barcodes(clip: torch.Tensor) -> list[int]:
    T, C = clip.shape[:2]
    return [read_barcode(pixels(clip, t, k)) for t in range(T) for k in range(C // 3)]


def config(**kw: object) -> Config:
    base = {"dataset_type": "ucf101", "T": 7, "N": 5, "target_size": 112, "short_size": 128, "class_num": 3}
    return Config(**{**base, **kw})


def write_lists(
    root: Path, entries: dict[str, list[tuple[str, int]]], classes: list[str] | None = None
) -> None:
    for split, rows in entries.items():
        (root / f"{split}.txt").write_text("".join(f"{p} {label}\n" for p, label in rows))
    if classes:
        (root / "classes.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(classes)))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_store(root / "clips/a/bar40.stclip", [barcode_frame(i, 128, 171) for i in range(40)])
    write_store(root / "clips/b/solid100.stclip", [solid(i % 64) for i in range(100)])
    write_store(root / "clips/c/one.stclip", [solid(9)])
    write_store(root / "clips/c/five.stclip", [solid(i) for i in range(5)])
    write_lists(
        root,
        {
            "train": [("clips/b/solid100.stclip", 1), ("clips/c/one.stclip", 2), ("clips/c/five.stclip", 2)],
            "val": [("clips/a/bar40.stclip", 0), ("clips/c/one.stclip", 2), ("clips/c/five.stclip", 2)],
        },
        ["a", "b", "c"],
    )
    return root


@pytest.mark.parametrize("recipe", ["ucf101", "kinetics400"])
def test_eval_reads_exactly_the_spec_frames_in_order(store: Path, recipe: str) -> None:
    ds = build_dataset(config(dataset_type=recipe), "val", root=store)
    clip, label = ds[0]
    assert clip.shape == (7, 15, 112, 112) and clip.dtype == torch.float32 and label == 0
    expected = (ucf_indices if recipe == "ucf101" else kinetics_indices)(40, 7, 5, train=False)
    assert barcodes(clip) == expected
    assert torch.equal(ds[0][0], clip)  # eval is deterministic: no train augmentation


def test_train_augmentation_is_a_function_of_seed_epoch_and_index(store: Path) -> None:
    """Whichever worker or process loads an item, and whatever was loaded before, it comes out the same."""
    ds = build_dataset(config(), Split.TRAIN, root=store, seed=1)
    first = ds[0][0]
    ds[1]
    assert torch.equal(ds[0][0], first)
    again = build_dataset(config(), Split.TRAIN, root=store, seed=1)
    assert torch.equal(again[0][0], first)
    others = []
    for epoch in range(1, 6):
        again.set_epoch(epoch)
        others.append(again[0][0])
    assert not all(torch.equal(first, o) for o in others)


def test_train_sampling_and_channel_layout(store: Path) -> None:
    ds = build_dataset(config(), Split.TRAIN, root=store, seed=1)
    starts: set[int] = set()
    clips = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        clip, label = ds[0]
        assert clip.shape == (7, 15, 112, 112) and label == 1
        clips.append(clip)
        for t, seg in enumerate(solid_indices(clip)):  # channel 3k+c = colour c of frame k of segment t
            start = (seg[0] - 14 * t) % 64  # the solid colours repeat every 64 frames
            assert seg == [(start + o + 14 * t) % 64 for o in (0, 2, 5, 7, 9)] and 0 <= start <= 3
            starts.add(start)
    assert len(starts) > 1 and not all(torch.equal(clips[0], c) for c in clips[1:])


@pytest.mark.parametrize("recipe", ["ucf101", "kinetics400"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_short_and_single_frame_videos(store: Path, recipe: str, split: str) -> None:
    ds = build_dataset(config(dataset_type=recipe), split, root=store)
    one, five = ds[1], ds[2]
    assert one[0].shape == five[0].shape == (7, 15, 112, 112)
    assert solid_indices(one[0]) == [[9] * 5] * 7
    assert all(0 <= i < 5 for seg in solid_indices(five[0]) for i in seg)


def test_multi_view_test_sampling(store: Path) -> None:
    ds = build_dataset(config(), "val", root=store, test_views=(2, 3))
    views, label = ds[0]
    assert views.shape == (6, 7, 15, 112, 112) and label == 0
    for j in range(2):
        expected = ucf_indices(40, 7, 5, train=False, clip=j, num_clips=2)
        for c in range(3):
            assert barcodes(views[3 * j + c]) == expected
    noise = np.random.default_rng(0).integers(0, 256, (12, 128, 171, 3), dtype=np.uint8)
    sample = Sample(write_store(store / "noise.stclip", list(noise)), 0)
    spec = ClipSpec.from_config(config())
    three, _ = VideoClipDataset([sample], spec, "val", test_views=(1, 3))[0]
    assert not torch.equal(three[0], three[1]) and not torch.equal(three[1], three[2])  # different crops
    ten, _ = VideoClipDataset([sample], spec, "val", test_views=(1, 10))[0]
    assert ten.shape == (10, 7, 15, 112, 112)
    assert torch.equal(ten[5], ten[0].flip(-1))  # the flipped corner
    assert torch.equal(three[1], ten[4]) and torch.equal(
        three[1], VideoClipDataset([sample], spec, "val")[0][0]
    )
    with pytest.raises(ValueError, match="for evaluation"):
        build_dataset(config(), "train", root=store, test_views=(1, 1))


def test_split_is_explicit() -> None:
    assert Split.coerce("val") is Split.VAL and Split.coerce("eval") is Split.VAL
    assert Split.coerce("test") is Split.TEST
    assert Split.coerce(Split.TRAIN) is Split.TRAIN
    with pytest.raises(ValueError, match="unknown split"):
        Split.coerce("True")


def test_build_dataset_errors(store: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="class_num"):
        build_dataset(config(class_num=101), "train", root=store)
    with pytest.raises(DataError, match="dataset_path is not set"):
        build_dataset(config(), "train")
    with pytest.raises(DataError, match="holds no dataset"):
        build_dataset(config(), "train", root=tmp_path)
    with pytest.raises(DataError, match="not found"):
        build_dataset(config(), "train", root=tmp_path / "nope")


# ---- what reference users already have -------------------------------------------------------------------


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_reference_kinetics_pickles(tmp_path: Path) -> None:
    for split, stems in (("train", ["vid_a", "vid_b"]), ("val", ["vid_c"])):
        (tmp_path / f"{split}.json").write_text(json.dumps([{"video_name": f"{s}.mp4"} for s in stems]))
        (tmp_path / split).mkdir()
        for n, stem in enumerate(stems):
            frames = [_jpeg(barcode_frame(i)) for i in range(30 + n)]
            with open(tmp_path / split / f"{stem}.pkl", "wb") as f:
                pickle.dump((f"./{stem}", 2 - n, frames), f, protocol=2)
    cfg = config(dataset_type="kinetics400")
    clip, label = build_dataset(cfg, "val", root=tmp_path)[0]
    assert label == 2  # the label comes from the pickle
    assert barcodes(clip) == kinetics_indices(30, 7, 5, train=False)
    train = build_dataset(cfg, "train", root=tmp_path)
    assert [train[i][1] for i in range(2)] == [2, 1]
    assert read_reference_pickle(tmp_path / "train" / "vid_b.pkl")[0] == 1


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # what an attacker's pickle would do on load
        return (open, (str(self.target), "w"))


def test_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    (tmp_path / "val").mkdir()
    payload = pickle.dumps(("./x", 0, [_Evil(marker)]), protocol=2)
    (tmp_path / "val" / "evil.pkl").write_bytes(payload)
    (tmp_path / "val.json").write_text(json.dumps([{"video_name": "evil.mp4"}]))
    with pytest.raises(DataError, match=r"refusing to load.*open"):
        read_reference_pickle(tmp_path / "val" / "evil.pkl")
    with pytest.raises(DataError, match="refusing"):
        build_dataset(config(dataset_type="kinetics400"), "val", root=tmp_path)[0]
    os_system = pickle.dumps(("./x", 0, []), protocol=2).replace(b"X\x03\x00\x00\x00./x", b"cos\nsystem\n")
    (tmp_path / "val" / "evil.pkl").write_bytes(os_system)
    with pytest.raises(DataError, match="refusing"):
        read_reference_pickle(tmp_path / "val" / "evil.pkl")
    assert not marker.exists()
    # a tuple of the wrong shape is refused too
    (tmp_path / "val" / "evil.pkl").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataError, match="not a reference Kinetics pickle"):
        read_reference_pickle(tmp_path / "val" / "evil.pkl")


def test_reference_ucf101_frame_folders(tmp_path: Path) -> None:
    """``0000{i}.jpg`` names sorted numerically; JPEGs with R and B swapped (cv2.imwrite of RGB)."""
    for split, cls in (("train", "Bravo"), ("train", "Alpha"), ("val", "Bravo")):
        folder = tmp_path / split / cls / f"v_{cls}_g01_c01"
        folder.mkdir(parents=True)
        for i in range(15):
            Image.fromarray(solid(i)[:, :, ::-1].copy()).save(folder / f"0000{i}.jpg", quality=95)
    assert [p.name for p in frame_files(tmp_path / "val/Bravo/v_Bravo_g01_c01")][9:12] == [
        "00009.jpg",
        "000010.jpg",
        "000011.jpg",
    ]
    ds = build_dataset(config(class_num=2), "val", root=tmp_path)
    clip, label = ds[0]
    assert label == 1  # sorted() class order of the train folders
    expected = ucf_indices(15, 7, 5, train=False)
    assert [i for seg in solid_indices(clip) for i in seg] == expected  # colours right, order numeric


def test_training_straight_from_videos(tmp_path: Path) -> None:
    write_video(tmp_path / "v" / "h264.mp4", 45)
    write_video(tmp_path / "v" / "mpeg4.avi", 38, codec="mpeg4")
    (tmp_path / "v" / "broken.mp4").write_bytes(b"\0" * 100)
    write_lists(
        tmp_path,
        {
            "val": [("v/h264.mp4", 0), ("v/mpeg4.avi", 1), ("v/broken.mp4", 1)],
            "train": [("v/h264.mp4", 0), ("v/broken.mp4", 1)],
        },
    )
    ds = build_dataset(config(class_num=2), "val", root=tmp_path)
    for i, length in ((0, 45), (1, 38)):
        clip, _ = ds[i]
        assert barcodes(clip) == ucf_indices(length, 7, 5, train=False)
    kin = build_dataset(config(class_num=2, dataset_type="kinetics400"), "val", root=tmp_path)
    assert barcodes(kin[1][0]) == kinetics_indices(38, 7, 5, train=False)
    with pytest.raises(DataError, match=r"broken\.mp4"):
        ds[2]
    train = build_dataset(config(class_num=2), "train", root=tmp_path, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            clip, label = train[1]  # unreadable in train: replaced by another video, with one warning
            assert clip.shape == (7, 15, 112, 112) and label == 0
    assert len([w for w in caught if "broken.mp4" in str(w.message)]) == 1


def test_prepared_dataset_end_to_end(tmp_path: Path) -> None:
    write_video(tmp_path / "src" / "train" / "jump" / "a.mp4", 33)
    write_video(tmp_path / "src" / "val" / "jump" / "b.avi", 36, codec="mpeg4")
    write_video(tmp_path / "src" / "train" / "run" / "c.avi", 29, codec="mpeg4")
    assert (
        cli.main(
            [
                "prepare",
                "list",
                "--root",
                str(tmp_path / "src"),
                "--folders",
                "--out",
                str(tmp_path / "out"),
                "--short-side",
                "128",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    ds = build_dataset(config(class_num=2), "val", root=tmp_path / "out")
    assert ds.classes == ["jump", "run"] and len(ds) == 1
    clip, label = ds[0]
    assert label == 0 and barcodes(clip) == ucf_indices(36, 7, 5, train=False)


# ---- loaders -------------------------------------------------------------------------------------------


def _solid_dataset(tmp_path: Path, n: int, split: str) -> VideoClipDataset:
    samples = [
        Sample(write_store(tmp_path / f"{i}.stclip", [solid(i + j) for j in range(6)]), i % 3)
        for i in range(n)
    ]
    spec = ClipSpec("kinetics400", T=2, N=1, target_size=16, short_size=16)
    return VideoClipDataset(samples, spec, split, seed=0)


def _loader_config(**values: Any) -> Config:
    return Config(**{"batch_size": 4, "workers": 2, "seed": 5, **values})


def test_loader_is_seeded_and_reshuffles_per_epoch(tmp_path: Path) -> None:
    ds = _solid_dataset(tmp_path, 10, "train")
    cfg = _loader_config()

    def epoch(number: int) -> list[torch.Tensor]:
        loader = build_loader(ds, cfg, DistInfo(), torch.device("cpu"), train=True, epoch=number)
        assert not loader.pin_memory and loader.drop_last
        return [x for x, _ in loader]

    first = epoch(0)
    assert len(first) == 2 and first[0].shape == (4, 2, 3, 16, 16)  # 10 // 4 full batches
    assert all(torch.equal(x, y) for x, y in zip(first, epoch(0), strict=True))
    second = epoch(1)
    assert not all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(second, epoch(1), strict=True))


def test_val_loader_keeps_every_video_in_order(tmp_path: Path) -> None:
    ds = _solid_dataset(tmp_path, 7, "val")
    loader = build_loader(
        ds, _loader_config(batch_size=3, workers=0), DistInfo(), torch.device("cpu"), train=False
    )
    batches = list(loader)
    assert torch.cat([b.video_ids for b in batches]).tolist() == list(range(7))
    assert torch.cat([b.labels for b in batches]).tolist() == [i % 3 for i in range(7)]
    assert not loader.drop_last


def test_val_loader_shards_without_padding(tmp_path: Path) -> None:
    ds = _solid_dataset(tmp_path, 7, "val")
    cfg = _loader_config(batch_size=3, workers=0)
    seen = [
        torch.cat(
            [b.video_ids for b in build_loader(ds, cfg, DistInfo(rank, 2), torch.device("cpu"), train=False)]
        )
        for rank in range(2)
    ]
    assert sorted(torch.cat(seen).tolist()) == list(range(7))


def test_shard_sampler_covers_every_index_once() -> None:
    shards = [list(ShardSampler(10, 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert [len(ShardSampler(10, 3, r)) for r in range(3)] == [4, 3, 3]


class _Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        return index, random.random(), float(np.random.rand()), float(torch.rand(()))


def test_workers_get_distinct_reproducible_seeds() -> None:
    def draws(seed: int, epoch: int = 0) -> dict[int, tuple[float, ...]]:
        cfg = _loader_config(batch_size=1, seed=seed)
        loader = build_loader(_Draws(), cfg, DistInfo(), torch.device("cpu"), train=True, epoch=epoch)
        return {int(i): tuple(float(v) for v in rest) for i, *rest in loader}

    first = draws(3)
    assert first == draws(3)
    # no two items draw the same numbers, whichever worker loads them
    a, b = (first[i] for i in sorted(first)[:2])
    assert all(x != y for x, y in zip(a, b, strict=True))
    assert first != draws(4) and first != draws(3, epoch=1)


def test_ten_crop_testing_is_refused_without_flips(tmp_path) -> None:
    spec = ClipSpec("kinetics400", 2, 2, 32, 36, flip=False)
    samples = [Sample(tmp_path / "a.mp4", 0)]
    with pytest.raises(DataError, match="10-crop testing adds mirrored crops"):
        VideoClipDataset(samples, spec, "val", test_views=(1, 10))
    assert VideoClipDataset(samples, spec, "val", test_views=(2, 3)).test_views == (2, 3)
