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
    assert (
        path.stat().st_size
        == clipstore.HEADER_SIZE + sum(map(len, jpegs)) + 8 * 41 + clipstore.SOURCE_SIZE + clipstore.RATE_SIZE
    )
    assert info.version == 3 and info.source is None  # written without a source: unknown
    assert (info.source_fps, info.source_frames) == (29.97, 40)  # every frame stored


def test_source_stamp_is_recorded_and_checked(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(bytes(range(256)) * 9000)  # > 2 MiB: both ends are hashed
    stamp = clipstore.SourceStamp.of(video)
    path = tmp_path / "v.stclip"
    with clipstore.ClipWriter(path, 25.0, source=stamp) as writer:
        writer.add_jpeg(_jpeg(0), (64, 48))
    info = clipstore.read_info(path)
    assert clipstore.is_complete(path) and info.source == stamp and stamp.matches(video)
    data = bytearray(video.read_bytes())
    os_stat = video.stat()
    data[-1] ^= 0xFF  # same size, a different last byte, the same mtime: trusted (nothing read)
    video.write_bytes(bytes(data))
    import os

    os.utime(video, ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns))
    assert stamp.matches(video)
    os.utime(video, ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 10**9))  # touched: the hash decides
    assert not stamp.matches(video)
    data[-1] ^= 0xFF
    video.write_bytes(bytes(data))  # the original bytes back, a new mtime (a copy without -p)
    assert stamp.matches(video)
    video.write_bytes(bytes(data[:-1]))  # another size
    assert not stamp.matches(video)
    assert not stamp.matches(tmp_path / "absent.mp4")


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "v.stclip"
    jpegs = [_jpeg(i) for i in range(5)]
    clipstore.write_clip(path, jpegs, (64, 48))
    data = bytearray(path.read_bytes()[: -clipstore.SOURCE_SIZE - clipstore.RATE_SIZE])  # version 1
    data[8:12] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert clipstore.is_complete(path)
    info = clipstore.read_info(path)
    assert info.version == 1 and info.source is None and info.num_frames == 5
    with clipstore.ClipReader(path) as reader:
        assert reader.read_jpegs([4, 0]) == [jpegs[4], jpegs[0]]


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
