"""Read and write MindSpore ``.ckpt`` checkpoint files with numpy only (no protobuf, no MindSpore).

A MindSpore checkpoint is a concatenation of serialized protobuf messages of this schema (concatenated
protobuf messages merge, so the whole file reads as one ``Checkpoint``)::

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;           // empty (or [0] in old files) for a 0-d tensor
      required string tensor_type = 2;   // "Float32", "Float16", "Int64", "Bool", "BFloat16", ...
      required bytes tensor_content = 3; // little-endian, C order
    }
    message MapTensorProto { repeated TensorProto tensor = 1; }

Details handled here:

* A tensor larger than 512 MiB is stored as several consecutive ``Value`` entries with the same tag, split
  along the first axis; their contents are concatenated in order. MindSpore's writer stores the *full*
  tensor's dims in every piece (and so does :func:`write_ckpt`); pieces that each carry their own slice's
  dims are accepted too.
* A file saved with CRC checking ends with ``b"crc_num"`` and the ``zlib.crc32`` of the rest of the file as
  10 big-endian bytes. The trailer is stripped; it is verified only with ``read_ckpt(..., verify_crc=True)``.
* ``BFloat16`` has no numpy dtype: it is returned as float32, exactly (the 16-bit pattern shifted left by 16
  bits and viewed as float32).
* ``MapTensorProto`` values (MindSpore ``MapParameter``) are not loaded; their names are reported
  (:func:`read_ckpt_detailed`, or a warning from :func:`read_ckpt`).
* Anything that does not parse (encrypted checkpoints, truncated or corrupt files, zip archives such as
  PyTorch checkpoints) raises :class:`MindSporeCheckpointError`.
"""

from __future__ import annotations

import os
import sys
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stnet.errors import StnetError
from stnet.fileio import atomic_path

__all__ = [
    "CkptContents",
    "MindSporeCheckpointError",
    "is_mindspore_ckpt",
    "read_ckpt",
    "read_ckpt_detailed",
    "write_ckpt",
]

DEFAULT_MAX_CHUNK_BYTES = 512 * 2**20
_CRC_MAGIC = b"crc_num"
_CRC_TRAILER_LEN = len(_CRC_MAGIC) + 10

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5

# tensor_type -> little-endian storage dtype of tensor_content ("str" is handled separately).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "Float16": np.dtype("<f2"),
    "Float32": np.dtype("<f4"),
    "Float64": np.dtype("<f8"),
    "BFloat16": np.dtype("<u2"),
    "Int8": np.dtype("i1"),
    "Int16": np.dtype("<i2"),
    "Int32": np.dtype("<i4"),
    "Int64": np.dtype("<i8"),
    "UInt8": np.dtype("u1"),
    "UInt16": np.dtype("<u2"),
    "UInt32": np.dtype("<u4"),
    "UInt64": np.dtype("<u8"),
    "Bool": np.dtype("u1"),
}
_STR_TYPE = "str"  # a 0-d numpy unicode array (UTF-32-LE content), as MindSpore saves string values

# (numpy kind, itemsize) -> tensor_type, for writing.
_TYPE_BY_KIND: dict[tuple[str, int], str] = {
    ("f", 2): "Float16",
    ("f", 4): "Float32",
    ("f", 8): "Float64",
    ("i", 1): "Int8",
    ("i", 2): "Int16",
    ("i", 4): "Int32",
    ("i", 8): "Int64",
    ("u", 1): "UInt8",
    ("u", 2): "UInt16",
    ("u", 4): "UInt32",
    ("u", 8): "UInt64",
    ("b", 1): "Bool",
}


class MindSporeCheckpointError(StnetError, ValueError):
    """The file is not a readable (unencrypted, uncorrupted) MindSpore checkpoint."""


class _Corrupt(Exception):
    """Internal parse failure; turned into :class:`MindSporeCheckpointError` with the file name."""


@dataclass
class CkptContents:
    """Everything :func:`read_ckpt_detailed` found in a checkpoint.

    ``tensors`` maps names to arrays in file order; ``skipped_map_tensors`` lists the names of
    ``MapTensorProto`` values (MindSpore ``MapParameter``), which are not loaded.
    """

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    skipped_map_tensors: list[str] = field(default_factory=list)


@dataclass
class _RawTensor:
    dims: tuple[int, ...]
    type_name: str
    content: memoryview


# --------------------------------------------------------------------------------------------------------
# protobuf wire format: decoding
# --------------------------------------------------------------------------------------------------------


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("varint longer than 10 bytes")


def _iter_fields(buf: memoryview, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for each field of the message stored in ``ranges``.

    Several ranges are read as one message (protobuf merge semantics). ``value`` is an ``int`` for varints,
    a ``(start, stop)`` range for length-delimited fields and ``None`` for (skipped) fixed-width fields.
    """
    for start, end in ranges:
        pos = start
        while pos < end:
            key, pos = _read_varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Corrupt("field number 0")
            value: Any = None
            if wire == _WIRE_VARINT:
                value, pos = _read_varint(buf, pos, end)
            elif wire == _WIRE_LEN:
                length, pos = _read_varint(buf, pos, end)
                if length > end - pos:
                    raise _Corrupt("length-delimited field runs past its end")
                value, pos = (pos, pos + length), pos + length
            elif wire in (_WIRE_I64, _WIRE_I32):
                pos += 8 if wire == _WIRE_I64 else 4
                if pos > end:
                    raise _Corrupt("truncated fixed-width field")
            else:
                raise _Corrupt(f"invalid wire type {wire}")
            yield number, wire, value


def _to_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(buf: memoryview, start: int, stop: int) -> list[int]:
    values = []
    pos = start
    while pos < stop:
        value, pos = _read_varint(buf, pos, stop)
        values.append(_to_int64(value))
    return values


def _decode_str(buf: memoryview, span: tuple[int, int], what: str) -> str:
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"{what} is not valid UTF-8") from exc


def _parse_tensor(buf: memoryview, ranges: list[tuple[int, int]], tag: str) -> _RawTensor:
    """Parse a ``TensorProto`` (dims packed or unpacked; unknown fields skipped)."""
    dims: list[int] = []
    type_name: str | None = None
    content = (0, 0)
    for number, wire, value in _iter_fields(buf, ranges):
        if number == 1 and wire == _WIRE_VARINT:
            dims.append(_to_int64(value))
        elif number == 1 and wire == _WIRE_LEN:
            dims.extend(_packed_varints(buf, *value))
        elif number == 2 and wire == _WIRE_LEN:
            type_name = _decode_str(buf, value, f"tensor_type of {tag!r}")
        elif number == 3 and wire == _WIRE_LEN:
            content = value
        elif number in (1, 2, 3):
            raise _Corrupt(f"tensor {tag!r}: field {number} has wrong wire type {wire}")
    if type_name is None:
        raise _Corrupt(f"tensor {tag!r} has no tensor_type")
    if any(d < 0 for d in dims):
        raise _Corrupt(f"tensor {tag!r} has negative dims {dims}")
    return _RawTensor(tuple(dims), type_name, buf[content[0] : content[1]])


def _parse_value(buf: memoryview, span: tuple[int, int]) -> tuple[str, _RawTensor | None]:
    """Parse a ``Checkpoint.Value``; the tensor is ``None`` for a ``MapTensorProto``."""
    tag: str | None = None
    kind: int | None = None  # 2: tensor, 3: maptensor (a oneof: the last one set wins)
    tensor_ranges: list[tuple[int, int]] = []
    for number, wire, value in _iter_fields(buf, [span]):
        if number == 1 and wire == _WIRE_LEN:
            tag = _decode_str(buf, value, "a tag")
        elif number in (2, 3) and wire == _WIRE_LEN:
            if kind != number:
                tensor_ranges = []
            kind = number
            tensor_ranges.append(value)
        elif number in (1, 2, 3):
            raise _Corrupt(f"Value field {number} has wrong wire type {wire}")
    if tag is None:
        raise _Corrupt("a value has no tag")
    if kind is None:
        raise _Corrupt(f"value {tag!r} has no tensor")
    return tag, (_parse_tensor(buf, tensor_ranges, tag) if kind == 2 else None)


def _parse_checkpoint(buf: memoryview) -> list[tuple[str, _RawTensor | None]]:
    """Parse the top-level ``Checkpoint`` message into ``(tag, tensor-or-None)`` entries, in order."""
    values = []
    for number, wire, value in _iter_fields(buf, [(0, len(buf))]):
        if number == 1:
            if wire != _WIRE_LEN:
                raise _Corrupt(f"Checkpoint field 1 has wrong wire type {wire}")
            values.append(_parse_value(buf, value))
    if not values:
        raise _Corrupt("no values")
    return values


# --------------------------------------------------------------------------------------------------------
# tensors
# --------------------------------------------------------------------------------------------------------


def _storage_dtype(raw: _RawTensor, tag: str) -> np.dtype:
    if raw.type_name == _STR_TYPE:
        return np.dtype(f"<U{len(raw.content) // 4}")
    try:
        return _STORAGE_DTYPES[raw.type_name]
    except KeyError:
        raise _Corrupt(f"tensor {tag!r} has unknown tensor_type {raw.type_name[:40]!r}") from None


def _to_user_array(stored: np.ndarray, type_name: str) -> np.ndarray:
    """Convert little-endian storage to a native, owned array (bf16 -> exact float32, bytes -> bool)."""
    if type_name == "BFloat16":
        bits = stored.astype(np.uint32)
        bits <<= 16  # in place: keeps 0-d arrays arrays
        return bits.view(np.float32)
    if type_name == "Bool":
        return stored.astype(np.bool_)
    return stored.astype(stored.dtype.newbyteorder("="))


def _decode(raw: _RawTensor, dims: tuple[int, ...], content: bytes | memoryview, tag: str) -> np.ndarray:
    """Decode ``content`` as a tensor of ``raw``'s type and shape ``dims``, checking its size."""
    dtype = _storage_dtype(raw, tag)
    if raw.type_name == _STR_TYPE:
        if not content or len(content) % 4 or dims not in ((), (0,)):
            raise _Corrupt(f"string value {tag!r} is malformed")
        return np.frombuffer(content, dtype=dtype, count=1).reshape(()).astype(dtype.newbyteorder("="))
    count = 1
    for d in dims:
        count *= d
    if dims == (0,) and len(content) == dtype.itemsize:
        dims, count = (), 1  # old MindSpore writers store 0-d tensors with dims [0]
    if count * dtype.itemsize != len(content):
        raise _Corrupt(
            f"tensor {tag!r}: tensor_content has {len(content)} bytes but dims {list(dims)} "
            f"of {raw.type_name} need {count * dtype.itemsize}"
        )
    return _to_user_array(np.frombuffer(content, dtype=dtype, count=count).reshape(dims), raw.type_name)


def _assemble(tag: str, parts: list[_RawTensor]) -> np.ndarray:
    """Build one array from the consecutive ``Value`` pieces that share ``tag``."""
    first = parts[0]
    if len(parts) == 1:
        return _decode(first, first.dims, first.content, tag)
    if any(p.type_name != first.type_name for p in parts):
        raise _Corrupt(f"pieces of tensor {tag!r} have different tensor_types")
    if all(p.dims == first.dims for p in parts):
        total = sum(len(p.content) for p in parts)
        full = 1
        for d in first.dims:
            full *= d
        if total == full * _storage_dtype(first, tag).itemsize:
            # MindSpore's convention: every piece carries the full dims
            return _decode(first, first.dims, b"".join(p.content for p in parts), tag)
    # otherwise every piece carries its own slice's dims
    arrays = [_decode(p, p.dims, p.content, tag) for p in parts]
    if any(a.ndim == 0 or a.shape[1:] != arrays[0].shape[1:] for a in arrays):
        raise _Corrupt(f"pieces of tensor {tag!r} have incompatible dims")
    return np.concatenate(arrays, axis=0)


def _collect(values: list[tuple[str, _RawTensor | None]]) -> CkptContents:
    """Group consecutive same-tag pieces, assemble them and set map tensors aside."""
    out = CkptContents()
    i = 0
    while i < len(values):
        tag, raw = values[i]
        j = i + 1
        while j < len(values) and values[j][0] == tag and (raw is None) == (values[j][1] is None):
            j += 1
        if tag in out.tensors or tag in out.skipped_map_tensors:
            raise _Corrupt(f"name {tag!r} appears twice (not as consecutive pieces)")
        if raw is None:
            out.skipped_map_tensors.append(tag)
        else:
            out.tensors[tag] = _assemble(tag, [v[1] for v in values[i:j] if v[1] is not None])
        i = j
    return out


# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------


def _foreign_format(data: bytes) -> str | None:
    """Name what ``data`` is when it is obviously not a checkpoint at all, else ``None``."""
    if not data:
        return "it is empty"
    if data.startswith(b"PK"):
        return "it is a zip archive (e.g. a PyTorch .pt/.pth checkpoint)"
    if len(data) >= 10 and data[8:10] == b'{"':
        return "it looks like a safetensors file"
    return None


def _strip_crc(data: memoryview, verify: bool) -> memoryview:
    """Remove a ``crc_num`` trailer, optionally checking it."""
    if len(data) < _CRC_TRAILER_LEN or data[-_CRC_TRAILER_LEN:-10] != _CRC_MAGIC:
        if verify:
            raise _Corrupt("verify_crc=True but the file has no crc_num trailer")
        return data
    body = data[:-_CRC_TRAILER_LEN]
    if verify and zlib.crc32(body) != int.from_bytes(data[-10:], "big"):
        raise _Corrupt("CRC check failed")
    return body


def read_ckpt_detailed(path: str | os.PathLike[str], *, verify_crc: bool = False) -> CkptContents:
    """Read a MindSpore checkpoint: its tensors (see :func:`read_ckpt`) and the names of skipped map tensors.

    Raises:
        MindSporeCheckpointError: the file is empty, a zip archive, encrypted, truncated or otherwise corrupt.
    """
    with open(path, "rb") as f:
        data = f.read()
    foreign = _foreign_format(data[:16])
    if foreign is not None:
        raise MindSporeCheckpointError(f"{os.fspath(path)}: not a MindSpore checkpoint: {foreign}")
    try:
        return _collect(_parse_checkpoint(_strip_crc(memoryview(data), verify_crc)))
    except _Corrupt as exc:
        raise MindSporeCheckpointError(
            f"{os.fspath(path)}: not a readable MindSpore checkpoint (possibly encrypted or corrupt): {exc}"
        ) from None


def read_ckpt(path: str | os.PathLike[str], *, verify_crc: bool = False) -> dict[str, np.ndarray]:
    """Read a MindSpore ``.ckpt`` file into ``{name: array}``, in file order.

    Arrays are native-endian, writable and own their memory. Float16/32/64, (unsigned) ints and Bool map
    to the matching numpy dtypes; 0-d tensors are 0-d arrays. ``BFloat16`` tensors are returned as float32
    (exact: each 16-bit pattern shifted left by 16 bits). A MindSpore string value is a 0-d unicode array.
    Map tensors are skipped with a :class:`UserWarning` (use :func:`read_ckpt_detailed` to get their names).
    With ``verify_crc`` the file must end with a ``crc_num`` trailer that matches its contents.

    Raises:
        MindSporeCheckpointError: the file is not a readable MindSpore checkpoint.
    """
    contents = read_ckpt_detailed(path, verify_crc=verify_crc)
    if contents.skipped_map_tensors:
        names = ", ".join(contents.skipped_map_tensors)
        warnings.warn(f"{os.fspath(path)}: skipped map tensors (not supported): {names}", stacklevel=2)
    return contents.tensors


def is_mindspore_ckpt(path: str | os.PathLike[str]) -> bool:
    """Cheap sniff: ``True`` if ``path`` is a file that starts like a MindSpore checkpoint.

    Checks only that the first byte is 0x0A (field 1, length-delimited) and that the file is no zip
    archive; an encrypted or corrupt checkpoint may still pass (or fail) this test.
    """
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(16)
    return _foreign_format(head) is None and head[:1] == b"\x0a"


# --------------------------------------------------------------------------------------------------------
# protobuf wire format: encoding
# --------------------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Encode a non-negative int (or an int64, two's complement) as a varint."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_key(number: int, length: int) -> bytes:
    """Key and length prefix of a length-delimited field."""
    return _varint(number << 3 | _WIRE_LEN) + _varint(length)


def _value_prefix(tag: str, dims: tuple[int, ...], type_name: str, content_len: int) -> bytes:
    """Serialize a ``Checkpoint`` with one ``Value`` up to (not including) the tensor content bytes."""
    tensor_head = b"".join(_varint(1 << 3 | _WIRE_VARINT) + _varint(d) for d in dims)
    tensor_head += _len_key(2, len(type_name)) + type_name.encode() + _len_key(3, content_len)
    tag_bytes = tag.encode("utf-8")
    value_head = _len_key(1, len(tag_bytes)) + tag_bytes + _len_key(2, len(tensor_head) + content_len)
    return _len_key(1, len(value_head) + len(tensor_head) + content_len) + value_head + tensor_head


# --------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------


def _torch_to_numpy(t: Any) -> tuple[np.ndarray, str | None]:
    """A torch tensor as a numpy array; bfloat16 comes back as its uint16 bit patterns with "BFloat16"."""
    torch = sys.modules["torch"]
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "BFloat16"
    return t.numpy(), None


def _prepare(name: str, tensor: Any) -> tuple[np.ndarray, str]:
    """Return the C-contiguous little-endian array to store and its MindSpore tensor_type."""
    torch = sys.modules.get("torch")
    type_name: str | None = None
    if torch is not None and isinstance(tensor, torch.Tensor):
        arr, type_name = _torch_to_numpy(tensor)
    else:
        arr = np.asarray(tensor)
    if type_name is None and arr.dtype.name == "bfloat16":  # e.g. ml_dtypes.bfloat16
        arr, type_name = arr.view(np.uint16), "BFloat16"
    if type_name is None and arr.dtype.kind == "U":
        if arr.ndim != 0:
            raise TypeError(f"{name!r}: only 0-d string arrays can be stored, got shape {arr.shape}")
        type_name = _STR_TYPE
    if type_name is None:
        type_name = _TYPE_BY_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
        if type_name is None:
            raise TypeError(f"{name!r}: dtype {arr.dtype} cannot be stored in a MindSpore checkpoint")
    return np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C"), type_name


def _split(arr: np.ndarray, max_chunk_bytes: int) -> list[np.ndarray]:
    """Split along axis 0 into pieces of at most about ``max_chunk_bytes`` (as MindSpore does)."""
    if arr.nbytes <= max_chunk_bytes or arr.ndim == 0 or arr.shape[0] < 2:
        return [arr]
    count = min(-(-arr.nbytes // max_chunk_bytes), arr.shape[0])
    return np.array_split(arr, count, axis=0)


def _serialized_pieces(name: str, tensor: Any, max_chunk_bytes: int) -> Iterator[bytes | memoryview]:
    """Yield the bytes of the ``Value`` entries storing ``tensor`` (every piece carries the full dims)."""
    arr, type_name = _prepare(name, tensor)
    dims = (0,) if type_name == _STR_TYPE else arr.shape
    for piece in _split(arr, max_chunk_bytes):
        content = memoryview(np.asarray(piece, order="C").reshape(-1).view(np.uint8))
        yield _value_prefix(name, dims, type_name, len(content))
        yield content


def _atomic_write(path: str, chunks: Iterator[bytes | memoryview], crc: bool) -> None:
    """Write ``chunks`` (plus an optional crc trailer) atomically to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        checksum = 0
        for chunk in chunks:
            f.write(chunk)
            checksum = zlib.crc32(chunk, checksum)
        if crc:
            f.write(_CRC_MAGIC + checksum.to_bytes(10, "big"))


def write_ckpt(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    *,
    crc: bool = False,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> None:
    """Write ``{name: numpy array | torch tensor}`` as a MindSpore checkpoint, atomically: the writer of
    the test fixtures (stnet itself only reads MindSpore checkpoints).

    Tensors are stored in mapping order. One larger than ``max_chunk_bytes`` is split along axis 0 into
    several ``Value`` entries with the same tag, each carrying the full dims (as MindSpore writes them).
    A torch ``bfloat16`` tensor (or an ``ml_dtypes`` bfloat16 array) is written as ``"BFloat16"``; a 0-d
    numpy unicode array as a MindSpore string value. With ``crc=True`` the MindSpore CRC trailer
    (``b"crc_num"`` + ``zlib.crc32`` of the body as 10 big-endian bytes) is appended.

    Raises:
        TypeError: a tensor's dtype has no MindSpore equivalent (e.g. complex, object).
        ValueError: ``max_chunk_bytes`` is not positive.
    """
    if max_chunk_bytes <= 0:
        raise ValueError(f"max_chunk_bytes must be positive, got {max_chunk_bytes}")
    chunks = (c for name, t in tensors.items() for c in _serialized_pieces(name, t, max_chunk_bytes))
    _atomic_write(os.fspath(path), chunks, crc)
