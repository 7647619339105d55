"""Tests for the dependency-free MindSpore checkpoint reader/writer."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from stnet.mindspore_ckpt import (
    MindSporeCheckpointError,
    is_mindspore_ckpt,
    read_ckpt,
    read_ckpt_detailed,
    write_ckpt,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mindspore_ckpt"
CKPT = FIXTURES / "tiny_resnet_subset.ckpt"
EXPECTED = FIXTURES / "tiny_resnet_subset_expected.npz"


# ---- an independent, minimal protobuf encoder to build hand-made files ----------------------------------


def _vi(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _ld(field: int, payload: bytes) -> bytes:
    return _vi(field << 3 | 2) + _vi(len(payload)) + payload


def _tensor(dims: list[int], type_name: str, content: bytes, *, packed: bool = False) -> bytes:
    if packed:
        head = _ld(1, b"".join(_vi(d) for d in dims)) if dims else b""
    else:
        head = b"".join(_vi(1 << 3) + _vi(d) for d in dims)
    return head + _ld(2, type_name.encode()) + _ld(3, content)


def _value(tag: str | None, tensor: bytes | None, *, field: int = 2) -> bytes:
    body = (_ld(1, tag.encode()) if tag is not None else b"") + (
        _ld(field, tensor) if tensor is not None else b""
    )
    return _ld(1, body)


def _f32(*values: float) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


# ---- the reference fixture written by mindspore.save_checkpoint ------------------------------------------


def test_fixture_matches_expected_npz() -> None:
    tensors = read_ckpt(CKPT)
    with np.load(EXPECTED) as expected:
        assert set(tensors) == set(expected.files)
        assert list(tensors) == list(expected.files)  # file order
        for name in expected.files:
            want = expected[name]
            got = tensors[name]
            assert got.dtype == want.dtype, name
            assert got.shape == want.shape, name
            assert np.array_equal(got, want), name


def test_fixture_covers_interesting_cases() -> None:
    tensors = read_ckpt(CKPT)
    assert len(tensors) == 13
    assert tensors["conv1.weight"].shape == (64, 3, 7, 7)
    assert tensors["half.weight"].dtype == np.float16
    assert tensors["global_step"].dtype == np.int32
    assert tensors["learning_rate"].shape == ()
    assert tensors["learning_rate"].dtype == np.float32
    assert float(tensors["learning_rate"]) == pytest.approx(0.01)
    assert np.abs(tensors["conv1.weight"]).max() > 0
    assert all(t.flags.writeable and t.flags.c_contiguous for t in tensors.values())


def test_rewriting_fixture_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "copy.ckpt"
    write_ckpt(out, read_ckpt(CKPT))
    assert out.read_bytes() == CKPT.read_bytes()


def test_is_mindspore_ckpt(tmp_path: Path) -> None:
    assert is_mindspore_ckpt(CKPT)
    assert not is_mindspore_ckpt(EXPECTED)  # a zip
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert not is_mindspore_ckpt(empty)
    assert not is_mindspore_ckpt(tmp_path / "missing.ckpt")
    assert not is_mindspore_ckpt(tmp_path)


# ---- round trips -----------------------------------------------------------------------------------------

_RNG = np.random.default_rng(1234)
_ARRAYS = {
    "f16": _RNG.standard_normal((3, 5)).astype(np.float16),
    "f32": _RNG.standard_normal((2, 3, 4)).astype(np.float32),
    "f64": _RNG.standard_normal((7,)),
    "i8": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
    "i16": np.array([[-32768, 32767]], dtype=np.int16),
    "i32": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
    "i64": np.array([-(2**63), -1, 2**63 - 1], dtype=np.int64),
    "u8": np.array([0, 1, 255], dtype=np.uint8),
    "u16": np.array([0, 65535], dtype=np.uint16),
    "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "bool": np.array([[True, False, True]]),
    "scalar_f32": np.array(0.125, dtype=np.float32),
    "scalar_i64": np.array(-42, dtype=np.int64),
    "scalar_bool": np.array(True),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "big_endian": np.array([1.5, -2.25], dtype=">f8"),
    "non_contiguous": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
}


@pytest.mark.parametrize("crc", [False, True])
def test_round_trip_all_dtypes(tmp_path: Path, crc: bool) -> None:
    bf16 = torch.tensor([[1.0, -2.5, 3.14159], [1e-3, -7e10, 0.0]], dtype=torch.bfloat16)
    path = tmp_path / "all.ckpt"
    write_ckpt(path, {**_ARRAYS, "bf16": bf16, "torch_f32": torch.arange(6.0).reshape(2, 3)}, crc=crc)
    got = read_ckpt(path, verify_crc=crc)
    assert list(got) == [*_ARRAYS, "bf16", "torch_f32"]
    for name, want in _ARRAYS.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype.newbyteorder("="), name
        assert np.array_equal(got[name], want), name
    assert got["bf16"].dtype == np.float32
    assert np.array_equal(got["bf16"], bf16.float().numpy())
    assert got["bf16"][0, 2] != np.float32(3.14159)  # really bf16-rounded
    assert np.array_equal(got["torch_f32"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert (path.read_bytes()[-17:-10] == b"crc_num") == crc


def test_bfloat16_bits_are_exact(tmp_path: Path) -> None:
    bits = np.array([0x0000, 0x8000, 0x3F80, 0xC0A0, 0x7F80, 0xFF80, 0x0001, 0x7F7F], dtype="<u2")
    path = tmp_path / "bf16.ckpt"
    path.write_bytes(_value("x", _tensor([8], "BFloat16", bits.tobytes())))
    got = read_ckpt(path)["x"]
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), bits.astype(np.uint32) << 16)
    assert got[2] == 1.0 and got[3] == -5.0 and np.isinf(got[4])


def test_crc_trailer_format_and_verification(tmp_path: Path) -> None:
    path = tmp_path / "crc.ckpt"
    write_ckpt(path, {"w": np.arange(10, dtype=np.float32)}, crc=True)
    data = path.read_bytes()
    body = data[:-17]
    assert data[-17:-10] == b"crc_num"
    assert int.from_bytes(data[-10:], "big") == zlib.crc32(body)  # MindSpore's crc_check layout
    assert np.array_equal(read_ckpt(path, verify_crc=True)["w"], np.arange(10, dtype=np.float32))

    damaged = bytearray(data)
    damaged[len(body) - 1] ^= 0x40  # inside the last float
    path.write_bytes(bytes(damaged))
    assert read_ckpt(path)["w"][-1] != 9.0
    with pytest.raises(MindSporeCheckpointError, match="CRC"):
        read_ckpt(path, verify_crc=True)

    path.write_bytes(body)
    with pytest.raises(MindSporeCheckpointError, match="no crc_num trailer"):
        read_ckpt(path, verify_crc=True)


@pytest.mark.parametrize(("shape", "max_chunk_bytes", "pieces"), [((10, 7), 64, 5), ((7, 3), 30, 3)])
def test_forced_split_reads_back(tmp_path: Path, shape: tuple, max_chunk_bytes: int, pieces: int) -> None:
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    small = np.array([1, 2], dtype=np.int64)
    path = tmp_path / "split.ckpt"
    write_ckpt(path, {"big": arr, "small": small}, max_chunk_bytes=max_chunk_bytes)
    assert path.read_bytes().count(b"\x0a\x03big") == pieces
    got = read_ckpt(path)
    assert list(got) == ["big", "small"]
    assert got["big"].shape == shape and np.array_equal(got["big"], arr)
    assert np.array_equal(got["small"], small)


def test_split_pieces_with_their_own_dims(tmp_path: Path) -> None:
    path = tmp_path / "own_dims.ckpt"
    path.write_bytes(
        _value("w", _tensor([2, 2], "Float32", _f32(1, 2, 3, 4)))
        + _value("w", _tensor([1, 2], "Float32", _f32(5, 6)))
    )
    assert np.array_equal(read_ckpt(path)["w"], np.arange(1, 7, dtype=np.float32).reshape(3, 2))


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    write_ckpt(path, {"a": np.ones(3, dtype=np.float32)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="complex"):
        write_ckpt(path, {"b": np.ones(2, dtype=np.float32), "c": np.ones(2, dtype=np.complex64)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_string_values_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "str.ckpt"
    write_ckpt(path, {"name": np.array("stnet-r50"), "x": np.zeros(1, dtype=np.float32)})
    got = read_ckpt(path)
    assert got["name"].shape == () and str(got["name"]) == "stnet-r50"


# ---- hand-made files: encodings MindSpore's writer may produce ------------------------------------------


def test_packed_dims_and_unknown_fields_are_handled(tmp_path: Path) -> None:
    unknown = _vi(9 << 3 | 0) + _vi(300) + _vi(10 << 3 | 1) + b"\x00" * 8
    unknown += _vi(11 << 3 | 5) + b"\x00" * 4 + _ld(12, b"\x0a\x02zz")
    tensor = unknown + _tensor([2, 300], "Int16", np.arange(600, dtype="<i2").tobytes(), packed=True)
    value = _ld(1, unknown + _ld(1, b"t") + _ld(2, tensor))
    path = tmp_path / "packed.ckpt"
    path.write_bytes(unknown + value + unknown)
    got = read_ckpt(path)
    assert list(got) == ["t"]
    assert np.array_equal(got["t"], np.arange(600, dtype=np.int16).reshape(2, 300))


def test_old_style_scalar_with_dims_zero(tmp_path: Path) -> None:
    path = tmp_path / "scalar.ckpt"
    path.write_bytes(
        _value("lr", _tensor([0], "Float32", _f32(0.5))) + _value("e", _tensor([0], "Float32", b""))
    )
    got = read_ckpt(path)
    assert got["lr"].shape == () and got["lr"] == 0.5
    assert got["e"].shape == (0,)


def test_map_tensors_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "map.ckpt"
    map_msg = _ld(1, _tensor([2], "Int32", struct.pack("<2i", 1, 2)))
    path.write_bytes(_value("emb", map_msg, field=3) + _value("w", _tensor([1], "Float32", _f32(3))))
    contents = read_ckpt_detailed(path)
    assert contents.skipped_map_tensors == ["emb"]
    assert list(contents.tensors) == ["w"]
    with pytest.warns(UserWarning, match="emb"):
        assert list(read_ckpt(path)) == ["w"]


# ---- refused inputs --------------------------------------------------------------------------------------

_W = _tensor([2], "Float32", _f32(1, 2))
# kind -> (file bytes, or None for the fixture cut in half; expected reason in the message)
_BAD_FILES: dict[str, tuple[bytes | None, str]] = {
    "truncated": (None, "runs past its end"),
    "random": (np.random.default_rng(20240601).bytes(4096), "invalid wire type"),
    "size_mismatch": (
        _value("w", _tensor([2, 3], "Float32", _f32(1, 2, 3, 4, 5))),
        "has 20 bytes but dims [2, 3] of Float32 need 24",
    ),
    "unknown_type": (_value("w", _tensor([2], "Complex7", _f32(1, 2))), "unknown tensor_type 'Complex7'"),
    "no_tag": (_value(None, _W), "no tag"),
    "no_tensor": (_value("w", None), "'w' has no tensor"),
    "no_values": (_vi(2 << 3) + _vi(1), "no values"),
    "bad_wire_type": (b"\x0b" + _W, "invalid wire type 3"),
    "truncated_varint": (_value("w", _W) + b"\x0a\xff\xff", "truncated varint"),
    "length_past_end": (b"\x0a\x7f" + _W, "runs past its end"),
    "split_mismatch": (
        _value("w", _tensor([2, 2], "Float32", _f32(1, 2))) + _value("w", _tensor([3], "Float32", _f32(3))),
        "need 16",
    ),
    "duplicate_name": (_value("w", _W) + _value("v", _W) + _value("w", _W), "'w' appears twice"),
}


@pytest.mark.parametrize("kind", sorted(_BAD_FILES))
def test_corrupt_files_are_refused(tmp_path: Path, kind: str) -> None:
    data, reason = _BAD_FILES[kind]
    if data is None:
        data = CKPT.read_bytes()[: CKPT.stat().st_size // 2]
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(data)
    with pytest.raises(MindSporeCheckpointError) as info:
        read_ckpt(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: not a readable MindSpore checkpoint (possibly encrypted or corrupt): "
    )
    assert reason in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_empty_and_zip_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(MindSporeCheckpointError, match="empty") as info:
        read_ckpt(empty)
    assert str(empty) in str(info.value)

    pth = tmp_path / "model.pth"
    torch.save({"w": torch.ones(2)}, pth)
    assert zipfile.is_zipfile(pth)
    with pytest.raises(MindSporeCheckpointError, match="zip archive") as info:
        read_ckpt(pth)
    assert str(pth) in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ckpt(tmp_path / "nope.ckpt")
