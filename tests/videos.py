"""Test helpers: encode tiny real videos whose frames carry their own index, and every kind of bad file.

A frame's index is drawn as a bar code of ``BITS`` horizontal stripes (white = 1, black = 0, most
significant bit at the top) spanning the whole width, so it survives JPEG/H.264/MPEG-4 compression,
any horizontal crop or flip, and a vertical centre crop that keeps the middle of every stripe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stnet.encode import encode_video

BITS = 6  # indices 0..63
HEIGHT, WIDTH = 48, 64


def barcode_frame(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """An RGB uint8 frame (height, width, 3) whose horizontal stripes spell ``index`` in binary."""
    if not 0 <= index < 2**BITS:
        raise ValueError(f"index {index} does not fit in {BITS} bits")
    frame = np.zeros((height, width, 3), np.uint8)
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            frame[bit * height // BITS : (bit + 1) * height // BITS] = 255
    return frame


def read_barcode(image: np.ndarray) -> int:
    """The index spelled by a (possibly resized, compressed, cropped at the sides) bar-code frame.

    ``image`` is (H, W) or (H, W, C); stripe b is sampled in a band around its centre row.
    """
    gray = image.mean(axis=2) if image.ndim == 3 else image
    h = gray.shape[0]
    value = 0
    for bit in range(BITS):
        centre = (bit + 0.5) * h / BITS
        band = gray[max(0, int(centre - h / (4 * BITS))) : int(centre + h / (4 * BITS)) + 1]
        value = value << 1 | int(band.mean() > 127)
    return value


def write_video(
    path: str | os.PathLike,
    num_frames: int,
    *,
    codec: str = "libx264",
    height: int = HEIGHT,
    width: int = WIDTH,
    fps: int = 25,
    frames: Sequence[np.ndarray] | None = None,
    rotate: int = 0,
    hflip: bool = False,
) -> Path:
    """Encode a video of bar-code frames 0..num_frames-1 (or the given RGB frames).

    ``codec="libx264"`` with a ``.mp4`` path gives H.264 MP4; ``codec="mpeg4"`` with ``.avi`` gives
    MPEG-4 part 2 AVI (UCF101's codec). ``rotate``/``hflip`` record a display matrix, as phones do
    (MP4/MOV/MKV): players show the frames turned ``rotate`` degrees counter-clockwise, then mirrored.
    """
    images = frames if frames is not None else [barcode_frame(i, height, width) for i in range(num_frames)]
    return encode_video(
        path,
        images,
        codec=codec,
        fps=fps,
        crf=12,
        preset="ultrafast",
        keyframe_interval=12,
        bit_rate=2_000_000,
        rotate=rotate,
        hflip=hflip,
    )


def write_audio_only(path: str | os.PathLike, seconds: float = 0.2) -> Path:
    """An MP4 with one AAC audio stream and no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_garbage_video(path: str | os.PathLike, packets: int = 5) -> Path:
    """An AVI whose MPEG-4 video stream holds only random bytes: a stream, but no decodable frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.codec_context.time_base = Fraction(1, 25)
        stream.pix_fmt = "yuv420p"
        for i in range(packets):
            packet = av.Packet(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 25)
            container.mux(packet)
    return path


def make_bad_files(folder: str | os.PathLike, suffix: str = ".avi") -> dict[str, Path]:
    """One file of each bad kind in ``folder``: name → path (all with ``suffix``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "_good_tmp.mp4"
    write_video(tmp, 20)
    good = tmp.read_bytes()
    tmp.unlink()
    out = {
        "empty": folder / f"empty{suffix}",
        "truncated": folder / f"truncated{suffix}",
        "not_a_video": folder / f"not_a_video{suffix}",
        "no_video_stream": folder / f"audio_only{suffix}",
        "no_frames": folder / f"no_frames{suffix}",
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(good[: len(good) // 2])  # moov atom at the end: cut off
    out["not_a_video"].write_text("this is a text file, not a video\n" * 20)
    write_audio_only(folder / "_audio.mp4")
    (folder / "_audio.mp4").rename(out["no_video_stream"])
    write_garbage_video(folder / "_garbage.avi")
    (folder / "_garbage.avi").rename(out["no_frames"])
    return out


def colour_frames(label: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` noisy 48×64 RGB frames whose channel ``label`` is raised: a class any frame shows."""
    frames = rng.integers(0, 90, size=(n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[..., label] += 150
    return list(frames)


def write_colour_dataset(
    root: str | os.PathLike, classes: Sequence[str], per_split: dict[str, int], *, avi_too: bool = False
) -> Path:
    """A `stnet prepare list`-style dataset of 16-frame clips told apart by their colour:
    ``videos/<class>/<split>_<i>.mp4`` (every odd ``i`` an MPEG-4 ``.avi`` with ``avi_too``),
    ``<split>.txt`` lists and ``classes.txt``."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for split, per_class in per_split.items():
        lines = []
        for label, name in enumerate(classes):
            for i in range(per_class):
                suffix, codec = (".avi", "mpeg4") if avi_too and i % 2 else (".mp4", "libx264")
                rel = f"videos/{name}/{split}_{i}{suffix}"
                write_video(root / rel, 16, codec=codec, frames=colour_frames(label, 16, rng))
                lines.append(f"{rel} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(classes)))
    return root
