"""`stnet synth`: real H.264 files and lists `stnet prepare` reads, determinism, refusals, and the key
property that a single frame carries no label information while motion does (checked statistically)."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from stnet import cli, synth
from stnet.encode import encode_video
from stnet.synth import MOTIONS, render_video, sample_scene, synthesize
from stnet.video import DataError

SIZE, FRAMES = 32, 16  # the smallest allowed: the properties do not depend on the size
SMALL = {"per_class": 5, "test_per_class": 1, "size": SIZE, "frames": FRAMES}


def _quiet(_message: str) -> None:
    pass


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _videos(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in _tree(folder).items() if k.endswith(".mp4")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize(out, seed=3, workers=2, log=_quiet, **SMALL)
    return out


# ----------------------------------------------------------------------------------------------------
# Files, lists and `stnet prepare`
# ----------------------------------------------------------------------------------------------------


def test_render_video_shape() -> None:
    video = render_video("grows", np.random.default_rng(0), size=48, frames=20)
    assert video.shape == (20, 48, 48, 3) and video.dtype == np.uint8
    assert video.std() > 10  # not blank


def test_encode_video_any_even_size(tmp_path: Path) -> None:
    video = render_video("shrinks", np.random.default_rng(0), size=34, frames=16)  # 34/2 is odd
    encode_video(tmp_path / "v.mp4", video, crf=0)
    decoded = _decode(tmp_path / "v.mp4").astype(np.float64).mean(-1)
    assert decoded.shape == (16, 34, 34)
    assert np.abs(decoded - video.astype(np.float64).mean(-1)).mean() < 3
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left


def test_files_and_lists(dataset: Path) -> None:
    classes = (dataset / "classes.txt").read_text().splitlines()
    assert classes == [f"{name} {i}" for i, name in enumerate(MOTIONS)]
    lines = {s: (dataset / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    for split, per_class in (("train", 4), ("val", 1), ("test", 1)):  # 5 per class, val 0.2, 1 test
        labels = [int(line.rsplit(" ", 1)[1]) for line in lines[split]]
        assert sorted(labels) == sorted(list(range(8)) * per_class), split  # stratified
        for line in lines[split]:
            rel, label = line.rsplit(" ", 1)
            assert rel.startswith(f"videos/{MOTIONS[int(label)]}/{MOTIONS[int(label)]}_")
    listed = {line.rsplit(" ", 1)[0] for split_lines in lines.values() for line in split_lines}
    assert len(listed) == 8 * 6
    assert listed == {str(p.relative_to(dataset)) for p in dataset.rglob("*.mp4")}
    with av.open(str(dataset / "videos/grows/grows_0000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 25
    for rel in sorted(listed)[::7]:
        assert _decode(dataset / rel).shape == (FRAMES, SIZE, SIZE, 3)
    meta = json.loads((dataset / "synth.json").read_text())
    assert (
        meta["complete"]
        and meta["settings"]["seed"] == 3
        and meta["counts"] == {"train": 32, "val": 8, "test": 8}
    )
    assert not list(dataset.rglob("*.tmp"))


def test_compression_keeps_the_frames(dataset: Path) -> None:
    """The decoded video is the rendered one up to codec loss (the pixel noise and 4:2:0 chroma go)."""
    rng = np.random.default_rng([3, MOTIONS.index("moves_up"), 2])
    rendered = render_video("moves_up", rng, SIZE, FRAMES).astype(np.float64).mean(-1)
    decoded = _decode(dataset / "videos/moves_up/moves_up_0002.mp4").astype(np.float64).mean(-1)
    psnr = 10 * np.log10(255**2 / ((decoded - rendered) ** 2).mean())
    assert psnr > 28
    # the motion survives: decoded frame t looks most like rendered frame t (at 32 px, x264 may still
    # merge a few frames of a slow object; at 64 px none in our checks)
    error = [[((decoded[t] - rendered[u]) ** 2).mean() for u in range(FRAMES)] for t in range(FRAMES)]
    assert (np.argmin(error, axis=1) == np.arange(FRAMES)).mean() >= 0.8


def test_prepare_reads_the_lists(dataset: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    d = str(dataset)
    argv = ["prepare", "list", "--root", d, "--list", f"train={d}/train.txt", "--list", f"val={d}/val.txt"]
    argv += ["--label-file", f"{d}/classes.txt", "--out", str(prepared), "--short-side", str(SIZE)]
    assert cli.main([*argv, "--workers", "1", "--quiet"]) == 0
    assert (prepared / "classes.txt").read_text() == (dataset / "classes.txt").read_text()
    report = json.loads((prepared / "prepare_report.json").read_text())
    assert report["counts"]["train"]["prepared"] == 32 and report["counts"]["val"]["prepared"] == 8
    assert report["counts"]["train"]["frames"] == 32 * FRAMES and not report["failures"]


# ----------------------------------------------------------------------------------------------------
# Determinism, reruns, refusals, arguments
# ----------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_any_workers(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize(again, seed=3, workers=1, log=_quiet, **SMALL)
    assert _videos(again) == _videos(dataset)
    other = tmp_path / "other"
    synthesize(other, classes=["grows", "moves_up"], seed=4, workers=1, log=_quiet, **SMALL)
    theirs = _videos(dataset)
    assert all(data != theirs[name] for name, data in _videos(other).items())


def test_video_does_not_depend_on_the_class_subset(dataset: Path, tmp_path: Path) -> None:
    subset = tmp_path / "subset"
    report = synthesize(subset, classes=["shrinks", "moves_left"], seed=3, workers=1, log=_quiet, **SMALL)
    assert report.classes == ["shrinks", "moves_left"] and report.counts == {"train": 8, "val": 2, "test": 2}
    assert (subset / "classes.txt").read_text() == "shrinks 0\nmoves_left 1\n"
    mine = _videos(subset)
    assert mine and all(data == _videos(dataset)[name] for name, data in mine.items())


def test_rerun_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "data"
    options = {"classes": ["grows", "shrinks"], "seed": 1, "workers": 1, "log": _quiet, **SMALL}
    synthesize(out, **options)
    before = _videos(out)
    (out / "videos/grows/.grows_0000.mp4.abc.tmp").write_bytes(b"left by a killed run")
    synthesize(out, **options)  # same settings: regenerates its own files
    assert _videos(out) == before and not list(out.rglob("*.tmp"))
    with pytest.raises(DataError, match=r"other settings.*per_class 5 → 6"):
        synthesize(out, **{**options, "per_class": 6})

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synth output"):
        synthesize(foreign, **options)
    assert _tree(foreign) == {"notes.txt": b"mine"}
    (foreign / "synth.json").write_text("{not json")
    with pytest.raises(DataError, match="not a synth output"):
        synthesize(foreign, **options)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        synthesize(a_file, **options)
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize(empty, **options)  # an existing empty folder is fine


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["moves_left", "jumps"]}, "unknown class 'jumps'; choose from moves_left, moves_right"),
        ({"classes": ["grows"]}, "at least 2 classes"),
        ({"classes": ["grows", "grows"]}, "listed twice"),
        ({"per_class": 2, "val_fraction": 0.2}, "too small"),
        ({"per_class": 1}, "too small"),
        ({"size": 16}, "--size must be"),
        ({"size": 33}, "--size must be"),
        ({"frames": 8}, "--frames must be >= 16"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"test_per_class": -1}, "--test-per-class"),
        ({"workers": 0}, "--workers"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        synthesize(tmp_path / "out", **{"log": _quiet, **kwargs})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_render_video_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown motion"):
        render_video("spins", np.random.default_rng(0))
    with pytest.raises(DataError, match="--frames"):
        render_video("grows", np.random.default_rng(0), frames=4)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="stnet")
    synth.register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--classes", "grows,moves_left", "--per_class", "5", "--size", "32"]
    args, rest = parser.parse_known_args([*argv, "--frames", "16", "--test-per-class", "0", "--quiet"])
    assert args.func(args, rest) == 0
    printed = capsys.readouterr().out
    assert "8 train, 2 val, 0 test" in printed
    assert f"stnet prepare list --root {out} --list train={out}/train.txt --list val={out}/val.txt" in printed
    assert f"--label-file {out}/classes.txt --out {out}_prepared --short-side 32" in printed
    assert (out / "test.txt").read_text() == ""
    args, rest = parser.parse_known_args([*argv, "--classes", "grows,nope"])
    with pytest.raises(DataError, match="unknown class 'nope'"):
        args.func(args, rest)


# ----------------------------------------------------------------------------------------------------
# Only motion tells the class: statistics over videos rendered in memory
# ----------------------------------------------------------------------------------------------------

PER_CLASS = 60


@pytest.fixture(scope="module")
def videos() -> tuple[np.ndarray, np.ndarray, list]:
    """(videos (8·60, F, S, S, 3), labels, scenes): the scene of each video is drawn from the same rng."""
    keys = [(c, i) for c in range(len(MOTIONS)) for i in range(PER_CLASS)]
    clips = np.stack(
        [render_video(MOTIONS[c], np.random.default_rng([1, c, i]), SIZE, FRAMES) for c, i in keys]
    )
    scenes = [sample_scene(MOTIONS[c], np.random.default_rng([1, c, i]), SIZE, FRAMES) for c, i in keys]
    return clips, np.array([c for c, _ in keys]), scenes


def _between(x: np.ndarray, y: np.ndarray) -> float:
    """Between-class sum of squares of the class means of the rows of ``x``."""
    x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(0)
    return float(sum((y == c).sum() * (x[y == c].mean(0) ** 2).sum() for c in np.unique(y)))


def _permutation_p(x: np.ndarray, y: np.ndarray, rounds: int = 200) -> float:
    """p-value of the class means differing more than under randomly shuffled labels (the baseline)."""
    rng = np.random.default_rng(0)
    observed = _between(x, y)
    null = [_between(x, rng.permutation(y)) for _ in range(rounds)]
    return (1 + sum(n >= observed for n in null)) / (1 + rounds)


def _pooled(x: np.ndarray, block: int = 4) -> np.ndarray:
    """(n, H, W, C) → (n, H/block · W/block · C) block means."""
    n, h, w, c = x.shape
    return (
        x.astype(np.float32).reshape(n, h // block, block, w // block, block, c).mean((2, 4)).reshape(n, -1)
    )


def _saliency(frames: np.ndarray) -> np.ndarray:
    """Colour distance of each pixel from its frame's median colour: where the objects are, any colour."""
    f = frames.astype(np.float32)
    median = np.median(f.reshape(len(f), -1, 3), axis=1)[:, None, None, :]
    return np.linalg.norm(f - median, axis=-1)[..., None]


def _horizontal_motion(clips: np.ndarray, t: int, k: int = 2) -> np.ndarray:
    """−(frame t+k − frame t)·∂x(frame t+k/2) per pixel: positive where the image moves right."""
    gray = clips.astype(np.float32).mean(-1)
    middle = gray[:, t + k // 2]
    dx = (np.roll(middle, -1, 2) - np.roll(middle, 1, 2)) / 2
    return (-(gray[:, t + k] - gray[:, t]) * dx)[..., None]


def _object_features(scenes: list, t: int) -> np.ndarray:
    """The main object's centre (as angles on the torus) and log radius at frame t."""
    angle = np.array([s.main.centre[t] for s in scenes]) * (2 * np.pi / SIZE)
    radius = np.array([s.main.radius[t] for s in scenes])
    return np.column_stack([np.cos(angle), np.sin(angle), np.log(radius)])


@pytest.mark.parametrize("t", [0, FRAMES // 2, FRAMES - 1])
def test_single_frames_carry_no_label(videos: tuple, t: int) -> None:
    clips, labels, scenes = videos
    frames = clips[:, t]
    assert _permutation_p(_pooled(frames), labels) > 0.01  # mean image
    assert _permutation_p(frames.astype(np.float32).mean((1, 2)), labels) > 0.01  # mean colour
    assert _permutation_p(_pooled(_saliency(frames)), labels) > 0.01  # where the objects are
    assert _permutation_p(_object_features(scenes, t), labels) > 0.01  # position and size of the object


def test_the_statistics_have_power(videos: tuple) -> None:
    """Positive controls: the same tests see motion, and would see a position or size that leaks."""
    clips, labels, scenes = videos
    left_right = (labels == MOTIONS.index("moves_left")) | (labels == MOTIONS.index("moves_right"))
    motion = _pooled(_horizontal_motion(clips[left_right], FRAMES // 2))
    assert _permutation_p(motion, labels[left_right]) < 0.01
    # a naive generator's leak: the object's side or size at frame t correlated with the label
    features = _object_features(scenes, 0)
    on_the_left = (np.array([s.main.centre[0, 0] % SIZE for s in scenes]) < SIZE / 2).astype(int)
    large = (features[:, 2] > np.median(features[:, 2])).astype(int)
    saliency = _pooled(_saliency(clips[:, 0]))
    assert _permutation_p(saliency, on_the_left) < 0.01
    assert _permutation_p(saliency, large) < 0.01


def _nearest_class_mean_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    centres = np.stack([x[train & (labels == c)].mean(0) for c in range(len(MOTIONS))])
    predicted = ((x[~train, None] - centres[None]) ** 2).sum(-1).argmin(1)
    return float((predicted == labels[~train]).mean())


def _global_flow(clips: np.ndarray, windows: int = 4, k: int = 2) -> np.ndarray:
    """A crude motion feature per clip: Lucas–Kanade global flow (vx, vy) and the change of edge energy
    (growth) in each of ``windows`` stretches of time."""
    gray = clips.astype(np.float32).mean(-1)

    def grad(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.roll(f, -1, 2) - np.roll(f, 1, 2)) / 2, (np.roll(f, -1, 1) - np.roll(f, 1, 1)) / 2

    def energy(f: np.ndarray) -> np.ndarray:
        gx, gy = grad(f)
        return np.log((gx**2 + gy**2).sum((1, 2)))

    edges = np.linspace(0, gray.shape[1] - k, windows + 1).astype(int)
    features = []
    for start, stop in itertools.pairwise(edges):
        flows, growth = [], []
        for t in range(start, stop):
            gx, gy = grad(gray[:, t + k // 2])
            d = gray[:, t + k] - gray[:, t]
            a = np.stack([(gx * gx).sum((1, 2)), (gx * gy).sum((1, 2)), (gy * gy).sum((1, 2))], -1)
            matrix = np.stack([a[:, :2], a[:, 1:]], -2) + 1e-3 * np.eye(2)
            rhs = -np.stack([(gx * d).sum((1, 2)), (gy * d).sum((1, 2))], -1)
            flows.append(np.linalg.solve(matrix, rhs[..., None])[..., 0])
            growth.append(energy(gray[:, t + k]) - energy(gray[:, t]))
        features += [np.mean(flows, 0), np.median(growth, 0)[:, None]]
    return np.concatenate(features, 1)


def test_single_frames_classify_at_chance_motion_does_not(videos: tuple) -> None:
    clips, labels, _ = videos
    train = np.tile(np.arange(PER_CLASS) < 40, len(MOTIONS))  # 40 train, 20 held-out videos per class
    chance = 1 / len(MOTIONS)
    for t in (0, FRAMES // 2):
        assert _nearest_class_mean_accuracy(_pooled(clips[:, t]), labels, train) < 2 * chance
        assert _nearest_class_mean_accuracy(_pooled(_saliency(clips[:, t])), labels, train) < 2 * chance
    assert _nearest_class_mean_accuracy(_global_flow(clips), labels, train) > 0.6  # measured: 0.91
