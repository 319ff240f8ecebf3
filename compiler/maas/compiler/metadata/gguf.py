"""GGUF header and tensor table parser over bytes: what placement needs, never the weights.

Pure and bounded: the caller (maas.host.models.metadata) passes a byte prefix of a local file or of
an HTTP range read. `parse_gguf` returns the header, or `NeedMore` with how many bytes of the file
it needs when the prefix ends inside the header, so a remote reader can grow its range. Every size a
hostile file declares is checked against fixed bounds before anything is allocated; a corrupt or
truncated header is a `MaasError` with a Diagnostic, never another exception."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from maas.compiler.diagnostics import MaasError, Position

MAX_HEADER_BYTES = 128 << 20  # the largest tokenizers (256k tokens + merges) are ~20 MiB
MAX_STRING_BYTES = 1 << 20  # chat templates are tens of KiB
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
MAX_KEPT_ARRAY = 4096  # per-layer arrays are kept; token lists are only counted
MAX_ELEMENTS = 1 << 50
DEFAULT_ALIGNMENT = 32
_KNOWN_TYPES = frozenset(int(t) for t in GGML_QUANT_SIZES)

_SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # ggml order: ne[0] first
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    version: int
    kv: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    data_bytes: int = field(default=0)

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)


@dataclass(frozen=True)
class NeedMore:
    """The prefix ended inside the header; read at least `size` bytes of the file and retry."""

    size: int


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.name = name

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > len(self.view):
            raise _Truncated
        if end > MAX_HEADER_BYTES:
            raise _corrupt(self.name, f"header is larger than {MAX_HEADER_BYTES >> 20} MiB")
        chunk = self.view[self.pos : end]
        self.pos = end
        return chunk

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.scalar("<Q")
        if size > MAX_STRING_BYTES:
            raise _corrupt(self.name, f"a string of {size} bytes at offset {self.pos - 8}")
        return bytes(self.take(size)).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        size = self.scalar("<Q")
        if size > MAX_STRING_BYTES:
            raise _corrupt(self.name, f"a string of {size} bytes at offset {self.pos - 8}")
        self.take(size)


def _corrupt(name: str, detail: str) -> MaasError:
    return MaasError.single(
        "model-metadata",
        f"not a valid GGUF file: {detail}",
        position=Position(name),
        hints=("the file may be damaged or not a GGUF model; download it again",),
    )


def parse_gguf(data: bytes, *, name: str, complete: bool, file_size: int | None = None) -> Any:
    """The header of a GGUF file from its first `len(data)` bytes: `GgufHeader` or `NeedMore`.

    `complete` says that `data` is the whole file, so running out of bytes means it is truncated.
    With `file_size` the tensor data must lie inside the file.
    """
    reader = _Reader(data, name)
    try:
        header = _parse(reader)
    except _Truncated:
        if complete or (file_size is not None and len(data) >= file_size):
            raise _corrupt(name, f"file ends inside the header ({len(data)} bytes)") from None
        grown = min(max(len(data) * 2, 1 << 20), MAX_HEADER_BYTES)
        if file_size is not None:
            grown = min(grown, file_size)
        if grown <= len(data):
            raise _corrupt(name, f"header is larger than {MAX_HEADER_BYTES >> 20} MiB") from None
        return NeedMore(grown)
    size = file_size if file_size is not None else (len(data) if complete else None)
    if size is not None and header.data_offset + header.data_bytes > size:
        missing = header.data_offset + header.data_bytes - size
        raise _corrupt(name, f"tensor data ends {missing} bytes past the end of the file")
    return header


def _parse(reader: _Reader) -> GgufHeader:
    magic = reader.scalar("<I")
    if magic != GGUF_MAGIC:
        raise _corrupt(reader.name, "bad magic (expected 'GGUF')")
    version = reader.scalar("<I")
    if version not in (2, 3):
        raise _corrupt(reader.name, f"unsupported GGUF version {version}")
    n_tensors = reader.scalar("<Q")
    n_kv = reader.scalar("<Q")
    # Each entry takes at least 8 bytes, so counts beyond the header bound are lies.
    if n_tensors > MAX_HEADER_BYTES // 8 or n_kv > MAX_HEADER_BYTES // 8:
        raise _corrupt(reader.name, f"implausible counts ({n_tensors} tensors, {n_kv} keys)")
    kv: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = reader.string()
        value_type = reader.scalar("<I")
        value = _value(reader, value_type, key, lengths)
        if value is not None:
            kv[key] = value
    alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _corrupt(reader.name, f"general.alignment {alignment!r} is not a power of two")
    tensors = [_tensor(reader) for _ in range(n_tensors)]
    data_offset = -(-reader.pos // alignment) * alignment
    end = 0
    for tensor in tensors:
        if tensor.offset % alignment:
            raise _corrupt(reader.name, f"tensor '{tensor.name}' is not aligned")
        end = max(end, tensor.offset + tensor.nbytes)
    return GgufHeader(version, kv, lengths, tensors, alignment, data_offset, end)


def _value(reader: _Reader, value_type: int, key: str, lengths: dict[str, int]) -> Any:
    if value_type in _SCALARS:
        return reader.scalar(_SCALARS[value_type])
    if value_type == GGUFValueType.STRING:
        return reader.string()
    if value_type != GGUFValueType.ARRAY:
        raise _corrupt(reader.name, f"unknown value type {value_type} for key '{key}'")
    item_type = reader.scalar("<I")
    count = reader.scalar("<Q")
    if count > MAX_HEADER_BYTES:
        raise _corrupt(reader.name, f"array '{key}' declares {count} items")
    lengths[key] = count
    if item_type in _SCALARS:
        size = struct.calcsize(_SCALARS[item_type])
        raw = reader.take(size * count)
        if count > MAX_KEPT_ARRAY:
            return None
        return [v[0] for v in struct.iter_unpack(_SCALARS[item_type], raw)]
    if item_type == GGUFValueType.STRING:
        for _ in range(count):
            reader.skip_string()
        return None
    raise _corrupt(reader.name, f"array '{key}' has items of unsupported type {item_type}")


def _tensor(reader: _Reader) -> TensorInfo:
    name = reader.string()
    n_dims = reader.scalar("<I")
    if not 1 <= n_dims <= MAX_TENSOR_DIMS:
        raise _corrupt(reader.name, f"tensor '{name}' has {n_dims} dimensions")
    shape = tuple(reader.scalar("<Q") for _ in range(n_dims))
    ggml_type = reader.scalar("<I")
    offset = reader.scalar("<Q")
    if ggml_type not in _KNOWN_TYPES or not all(shape):
        raise _corrupt(reader.name, f"tensor '{name}' has type {ggml_type} and shape {shape}")
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    elements = math.prod(shape)
    if shape[0] % block or elements > MAX_ELEMENTS:
        raise _corrupt(reader.name, f"tensor '{name}' shape {shape} does not fit its type")
    return TensorInfo(name, ggml_type, shape, offset, elements // block * type_size)
