"""16.3 `stnet predict SOURCE --live`: an mp4 streamed over HTTP from 127.0.0.1 and MPEG-TS piped from
another process give the same numbers as the file's timeline for the same windows; --smooth and
--threshold give the timeline's smoothed numbers and segments; stale windows are dropped when the model
is slow; Ctrl-C ends with a summary; bad sources are one line."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stnet import live as live_module
from stnet.cli import main
from stnet.encode import VideoWriter, encode_video
from stnet.live import LivePrediction, live
from stnet.timeline import segments, smooth, timeline
from tiny_model import tiny_runner, tiny_weights
from videos import barcode_frame, colour_frames

FRAMES = 40
WINDOW = {"window_s": 0.48, "stride_s": 0.16}  # 12 frames every 4 at 25 fps


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return tiny_runner(tmp_path_factory.mktemp("model"))


def _same_windows(predictions, reference) -> None:
    by_first = {w.first: w for w in reference.windows}
    assert predictions
    for p in predictions:
        w = by_first[p.window.first]
        assert (p.window.frames, p.window.end) == (w.frames, w.end)
        np.testing.assert_array_equal(p.window.probs, w.probs)


def test_http_stream_equals_the_file_timeline(runner, tmp_path):
    path = encode_video(
        tmp_path / "stream.mp4",
        [barcode_frame(i) for i in range(FRAMES)],
        options={"movflags": "frag_keyframe+empty_moov"},  # an MP4 that plays while it downloads
    )
    data = path.read_bytes()

    class Stream(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Transfer-Encoding", "chunked")  # no length, no ranges: a live stream
            self.end_headers()
            for i in range(0, len(data), 4096):
                chunk = data[i : i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.005)
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = []
        summary = live(runner, f"http://127.0.0.1:{server.server_port}/stream.mp4", got.append, **WINDOW)
    finally:
        server.shutdown()
    assert summary.error is None and summary.frames == FRAMES
    assert (
        summary.predictions == len(got) and summary.predictions + summary.skipped == 8
    )  # first frames 0, 4, ..., 28
    _same_windows(got, timeline(runner, path, **WINDOW))


WRITER = """
import sys
from stnet.encode import VideoWriter
from videos import barcode_frame
with VideoWriter(sys.stdout.buffer, container_format="mpegts") as writer:
    for i in range({frames}):
        writer.write(barcode_frame(i))
"""


def test_mpegts_pipe_equals_the_file_timeline(runner, tmp_path):
    reference = tmp_path / "same.ts"
    with VideoWriter(reference) as writer:  # the same encoder and frames: the same bytes as the pipe's
        for i in range(FRAMES):
            writer.write(barcode_frame(i))
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)])}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(frames=FRAMES)], stdout=subprocess.PIPE, env=env
    )
    got = []
    try:
        summary = live(runner, "-", got.append, stdin=child.stdout, **WINDOW)
    finally:
        child.stdout.close()
        assert child.wait() == 0
    assert summary.error is None and summary.frames == FRAMES
    _same_windows(got, timeline(runner, reference, **WINDOW))


def _paced(monkeypatch) -> None:
    """Live reads the file no faster than the model answers (no window skipped), as a camera would for
    a fast model: after the frame that ends a window (12 frames every 4), the next waits for its answer."""
    answered = threading.Semaphore(0)
    classify, frames = live_module.classify, live_module.decoded_frames

    def answer(*args):
        window = classify(*args)
        answered.release()
        return window

    def paced(container):
        for count, image in enumerate(frames(container), 1):
            yield image
            if count >= 12 and (count - 12) % 4 == 0:
                assert answered.acquire(timeout=60)

    monkeypatch.setattr(live_module, "classify", answer)
    monkeypatch.setattr(live_module, "decoded_frames", paced)


def test_smooth_and_threshold_equal_the_timeline(runner, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    colours = [colour_frames(c, 10, rng) for c in range(3)]  # 30 frames: windows 0, 4, ..., 16 and 18
    path = encode_video(tmp_path / "colours.mp4", [f for frames in colours for f in frames])
    _paced(monkeypatch)
    weights, names, flags = tiny_weights(tmp_path)  # the runner fixture's model
    argv = ["predict", str(path), "--live", "--checkpoint", str(weights), "--classes", str(names), *flags]
    options = ["--window", "0.48", "--stride", "0.16", "--threshold", "0.57", "--smooth", "3", "--json"]
    assert main([*argv, *options]) == 0
    *answers, last = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    reference = timeline(runner, path, **WINDOW)
    rule = {"threshold": 0.57, "smoothing": 3, "mode": "median"}
    found = segments(reference.windows, runner.info.class_names, reference.duration, **rule)
    smoothed = smooth(np.stack([w.probs for w in reference.windows]), 3, "median")
    assert [(a["start"], a["skipped"]) for a in answers] == [
        (round(w.start, 3), 0) for w in reference.windows
    ]
    for answer, row in zip(answers, smoothed, strict=True):  # centred, so each is given one answer late
        assert [(t["index"], t["prob"]) for t in answer["top"]] == [
            (i, round(float(row[i]), 6)) for i in np.argsort(-row, kind="stable")
        ]
    assert [a["segment"] for a in answers] == ["green", None, None, "green", "green", "green"]
    assert [i for i, a in enumerate(answers) if a["started"]] == [0, 3]
    ended = [a["ended"] for a in answers if a["ended"]] + [last["ended"]]
    assert ended == [s.to_json() for s in found] and len(found) == 2  # one ends mid-stream, one at the end
    assert last == {"time": 1.2, "ended": found[1].to_json()}

    top = [("green", 1, 0.5561)]
    ends = LivePrediction(reference.windows[1], top, 0.002, 0, segment=None, ended=found[0])
    assert (
        ends.line()
        == "00:00.6  green 0.556  latency 2 ms  | green ended (00:00.0-00:00.3, prob 0.592, 1 window)"
    )
    starts = LivePrediction(reference.windows[3], top, 0.002, 0, segment="green", started=True)
    assert starts.line() == "00:01.0  green 0.556  latency 2 ms  | green started"


def test_slow_model_skips_stale_windows_and_ctrl_c_ends_cleanly(runner, tmp_path, capsys):
    path = encode_video(tmp_path / "v.mp4", [barcode_frame(i) for i in range(FRAMES)])
    calls: list[float] = []

    def slow(clips):
        start = time.perf_counter()
        time.sleep(0.3)  # a window arrives every frame; this model needs far longer than decoding one
        logits = runner.run(clips)
        calls.append(time.perf_counter() - start)
        return logits

    slow_runner = type(runner)(runner.info, runner.fmt, slow, runner.backend)
    got = []
    summary = live(slow_runner, str(path), got.append, window_s=0.48, stride_s=0.04)  # a window per frame
    assert summary.skipped > 0 and summary.predictions + summary.skipped == FRAMES - 12 + 1
    # a window waits for at most the call before it, never for the backlog of every window
    assert max(summary.latencies) <= 2 * max(calls) + 0.5

    def interrupted(clips):
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, here during the first call

    stopped = live(type(runner)(runner.info, runner.fmt, interrupted, runner.backend), str(path), got.append)
    assert stopped.interrupted and stopped.predictions == 0 and stopped.error is None
    assert "interrupted after" in stopped.line() and "0 predictions" in stopped.line()


def test_sources_that_cannot_be_opened_are_one_line(tmp_path, capsys):
    from tiny_model import tiny_weights

    weights, names, flags = tiny_weights(tmp_path)
    model = ["--checkpoint", str(weights), "--classes", str(names), *flags]
    cases = [
        (str(tmp_path / "missing.mp4"), "missing.mp4: file not found"),
        ("http://127.0.0.1:1/none.mp4", "http://127.0.0.1:1/none.mp4: cannot open"),
        ("/dev/video99", "/dev/video99: cannot open"),
    ]
    for source, message in cases:
        assert main(["predict", source, "--live", *model]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["predict", "--camera", "0", "a.mp4", "--live", *model]) == 1
    assert "not both" in capsys.readouterr().err
