"""The clip file format: round trip, random access, and not trusting incomplete files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stnet import clipstore
from stnet.video import DataError
from videos import barcode_frame, read_barcode


def _jpeg(index: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(barcode_frame(index)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_round_trip_and_random_access(tmp_path: Path) -> None:
    path = tmp_path / "v.stclip"
    jpegs = [_jpeg(i) for i in range(40)]
    clipstore.write_clip(path, jpegs, (64, 48), fps=29.97)
    assert clipstore.is_complete(path)
    info = clipstore.read_info(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (40, 64, 48, 29.97)
    with clipstore.ClipReader(path) as reader:
        assert len(reader) == 40
        wanted = [39, 0, 5, 5, 7, 20, 1]
        assert reader.read_jpegs(wanted) == [jpegs[i] for i in wanted]
        assert [read_barcode(np.asarray(im)) for im in reader.read_images(wanted)] == wanted
        with pytest.raises(IndexError):
            reader.read_jpegs([40])
    assert path.stat().st_size == clipstore.HEADER_SIZE + sum(map(len, jpegs)) + 8 * 41


def test_writer_streams_images_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    path = tmp_path / "a" / "v.stclip"
    with clipstore.ClipWriter(path, fps=25) as writer:
        for i in range(3):
            writer.add_image(Image.fromarray(barcode_frame(i)), quality=80)
    assert clipstore.is_complete(path) and len(clipstore.ClipReader(path)) == 3

    other = tmp_path / "a" / "w.stclip"
    with pytest.raises(RuntimeError), clipstore.ClipWriter(other) as writer:
        writer.add_image(Image.fromarray(barcode_frame(1)))
        raise RuntimeError("killed")
    with pytest.raises(DataError, match="no frames"), clipstore.ClipWriter(other):
        pass
    with pytest.raises(DataError, match="resolution"), clipstore.ClipWriter(other) as writer:
        writer.add_image(Image.fromarray(barcode_frame(1)))
        writer.add_image(Image.fromarray(barcode_frame(1, 32, 32)))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["v.stclip"]  # no temp files, no w.stclip


def test_incomplete_files_are_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "v.stclip"
    clipstore.write_clip(path, [_jpeg(i) for i in range(10)], (64, 48))
    data = path.read_bytes()
    cases = {
        "truncated": data[:-5],
        "cut in the frames": data[: len(data) // 2],
        "header never written": b"\0" * clipstore.HEADER_SIZE + data[clipstore.HEADER_SIZE :],
        "extra bytes": data + b"\0",
        "empty": b"",
        "not a clip": b"hello world" * 10,
    }
    for name, content in cases.items():
        path.write_bytes(content)
        assert not clipstore.is_complete(path), name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        clipstore.ClipReader(path)
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(DataError, match="not a clip file"):
        clipstore.ClipReader(path)
    assert not clipstore.is_complete(tmp_path / "absent.stclip")
