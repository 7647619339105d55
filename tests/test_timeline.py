"""16.1 `stnet predict VIDEO --timeline` and 16.2 `--out-video`: windows equal predict's numbers on the
same frames, segments, the outputs (text, JSON, CSV, PNG, annotated mp4/gif) and their one-line errors."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from stnet.cli import main
from stnet.datasets import ClipSpec, Sample, VideoClipDataset, eval_views
from stnet.inference import predict, view_probabilities
from stnet.timeline import Window, WindowSize, segments, timeline, window_bounds
from stnet.video import iter_frames
from tiny_model import tiny_runner, tiny_weights
from videos import barcode_frame, write_video


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    weights, names, flags = tiny_weights(folder)
    return tiny_runner(folder), ["--checkpoint", str(weights), "--classes", str(names), *flags]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """40 bar-code frames at 25 fps (1.6 s), each frame different."""
    return write_video(tmp_path_factory.mktemp("video") / "long.mp4", 40)


def _frames_probs(runner, folder, clips: int, crops: int) -> np.ndarray:
    """What predict computes for a 'video' made of the PNG frames in ``folder``."""
    spec = ClipSpec.from_config(runner.info.config())
    dataset = VideoClipDataset(
        [Sample(folder, 0)], spec, "val", test_views=eval_views(clips, crops), augment=False
    )
    views, _, _, weights = dataset.distinct_views(0)
    return view_probabilities(runner, views.numpy(), weights.numpy())


def test_windows_equal_predict_on_the_same_frames(model, video, tmp_path):
    runner, _ = model
    frames = list(iter_frames(video))
    result = timeline(runner, video, window_s=0.48, stride_s=0.32, clips=2, crops=3)  # 12 frames every 8
    firsts = [w.first for w in result.windows]
    assert firsts == [0, 8, 16, 24, 28] and {w.frames for w in result.windows} == {12}  # last: the end
    assert result.frames == 40 and (result.windows[1].start, result.windows[1].end) == (0.32, 0.8)
    for w in result.windows[1::3]:  # an inner window and the one aligned to the end
        folder = tmp_path / f"w{w.first}"
        folder.mkdir()
        for i in range(w.frames):
            frames[w.first + i].save(folder / f"{i:05d}.png")
        np.testing.assert_array_equal(w.probs, _frames_probs(runner, folder, 2, 3))
    # a window as long as the video is predict's answer for the file itself
    whole = timeline(runner, video, window_s=10.0, clips=2, crops=3).windows
    (pred,) = predict(runner, [video], topk=3, clips=2, crops=3)
    assert len(whole) == 1 and whole[0].frames == 40
    assert [(i, p) for _n, i, p in pred.top] == [(i, whole[0].probs[i]) for i in np.argsort(-whole[0].probs)]


def _window(start: float, probs: list[float]) -> Window:
    return Window(round(start * 10), 10, start, start + 1.0, np.asarray(probs))


def test_segments_merge_smooth_and_threshold():
    names = ["a", "b", "c"]
    rows = [[0.9, 0.1, 0], [0.8, 0.2, 0], [0.2, 0.7, 0.1], [0.9, 0.1, 0], [0.1, 0.8, 0.1], [0.1, 0.9, 0]]
    rows += [[0.4, 0.3, 0.3]]  # below the threshold: no segment
    windows = [_window(0.5 * i, r) for i, r in enumerate(rows)]  # 1 s windows every 0.5 s
    duration = 4.0
    assert window_bounds(windows[:3], 2.0) == [(0.0, 0.75), (0.75, 1.25), (1.25, 2.0)]  # centres' midpoints
    raw = segments(windows, names, duration, threshold=0.5)
    assert [(s.label, s.start, s.end, s.windows) for s in raw] == [
        ("a", 0.0, 1.25, 2),
        ("b", 1.25, 1.75, 1),
        ("a", 1.75, 2.25, 1),
        ("b", 2.25, 3.25, 2),
    ]
    assert raw[0].prob == pytest.approx(0.85) and raw[3].prob == pytest.approx(0.85)
    # the median of 3 removes the one-window flips; the last window's neighbourhood is 2 windows
    smoothed = segments(windows, names, duration, threshold=0.5, smoothing=3, mode="median")
    assert [(s.label, s.start, s.end) for s in smoothed] == [("a", 0.0, 1.75), ("b", 1.75, 4.0)]
    assert [s.label for s in segments(windows, names, duration, threshold=0.0, smoothing=3, mode="mean")] == [
        "a",
        "b",
    ]


def test_default_window_is_one_clip_span_at_the_video_rate(model):
    runner, _ = model
    info = runner.info  # kinetics400, T=2, N=2: T*N frames
    size = WindowSize.resolve(info, Fraction(50), None, None)
    assert (size.frames, size.stride, size.seconds(size.frames)) == (4, 2, 0.08)
    size = WindowSize.resolve(info, Fraction(25), 2.0, 0.5)
    assert (size.frames, size.stride) == (50, 12)


def test_timeline_outputs(model, video, tmp_path, capsys):
    _, flags = model
    csv, png = tmp_path / "t.csv", tmp_path / "t.png"
    argv = [
        "predict",
        str(video),
        "--timeline",
        "--window",
        "0.48",
        "--stride",
        "0.32",
        "--topk",
        "2",
        *flags,
    ]
    assert main([*argv, "--json", "--csv", str(csv), "--plot", str(png), "--threshold", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    (obj,) = [json.loads(line) for line in out]  # --json: JSON only on stdout, one object per video
    assert obj["frames"] == 40 and obj["window"] == 0.48 and obj["stride"] == 0.32
    assert [w["first_frame"] for w in obj["windows"]] == [0, 8, 16, 24, 28]
    assert all(len(w["top"]) == 2 for w in obj["windows"])
    assert obj["segments"] and obj["segments"][0]["start"] == 0 and obj["segments"][-1]["end"] == 1.6
    rows = csv.read_text().splitlines()
    assert rows[0] == "video,kind,start,end,rank,class,prob"
    assert len(rows) == 1 + 2 * len(obj["windows"]) + len(obj["segments"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "40 frames at 25 fps (00:01.6), 5 windows of 0.48 s every 0.32 s" in text


def test_timeline_errors_are_one_line_and_write_nothing(model, video, tmp_path, capsys):
    _, flags = model
    out = tmp_path / "t.png"
    cases = [
        (["--timeline", "--plot", str(out), str(video)], "--plot draws one video"),  # two videos
        (["--window", "2"], "--window go with --timeline"),
        (["--timeline", "--csv", str(video)], "is also an input"),
        (["--timeline", "--plot", str(tmp_path / "t.jpg")], "--plot writes a PNG"),
        (["--out-video", str(tmp_path / "o.avi")], "--out-video must end in .mp4"),
        (["--timeline", "--window", "0"], "argument --window"),
    ]
    before = video.read_bytes()
    for extra, message in cases:
        assert main(["predict", str(video), *flags, *extra]) != 0, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert video.read_bytes() == before and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """24 frames of 128x96 bar codes (smooth enough to encode cleanly)."""
    frames = [barcode_frame(i, 96, 128) for i in range(24)]
    return write_video(tmp_path_factory.mktemp("textured") / "in.mp4", 24, frames=frames)


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_out_video_draws_the_labels_and_keeps_the_rest(model, textured, tmp_path, capsys, suffix):
    from stnet.annotate import panel_box

    _, flags = model
    out = tmp_path / f"out{suffix}"
    argv = ["predict", str(textured), "--timeline", "--window", "0.32", "--topk", "2", *flags]
    assert main([*argv, "--out-video", str(out)]) == 0, capsys.readouterr().err
    source, drawn = _decode(textured), _decode(out)
    assert drawn.shape == source.shape  # every frame, same size
    x0, y0, x1, y1 = panel_box(128, 96, 2)
    panel = np.zeros(source.shape[1:3], bool)
    panel[y0:y1, x0:x1] = True
    diff = np.abs(drawn - source).mean(axis=3)  # (frames, H, W)
    assert diff[:, panel].mean() > 40  # the darkened box with its text
    assert diff[:, ~panel].mean() < 4  # elsewhere the input, up to codec noise (GIF: its palette)
    if suffix == ".mp4":
        with av.open(str(out)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
    smaller = tmp_path / f"small{suffix}"
    assert main([*argv, "--out-video", str(smaller), "--out-size", "64x48"]) == 0
    assert _decode(smaller).shape == (24, 48, 64, 3)
