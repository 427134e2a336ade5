"""A fast GGUF header reader and a tensor loader that dequantizes with the `gguf` package.

`gguf.GGUFReader` builds one object per vocabulary string (16 s for Gemma's 262k tokens on a
2-core machine); this reader parses the header in one pass and memory-maps the tensor data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gguf_quants

from mlxserve.models.convert.errors import ConversionError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
DEQUANTIZE_CHUNK_BYTES = 32 << 20
SCALAR_FORMATS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
NUMPY_TYPES = {
    0: "u1",
    1: "i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first), the reverse of GGUF's dims
    qtype: GGMLQuantizationType
    offset: int  # absolute offset of the tensor data in the file
    nbytes: int


@dataclass
class GGUFFile:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    _data: np.memmap | None = None

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """`<arch>.<key>` from the metadata, e.g. arch_value("block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def load(self, name: str) -> np.ndarray:
        """The tensor as float32 in numpy order, dequantized with `gguf.quants`."""
        info = self.tensors[name]
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._data[info.offset : info.offset + info.nbytes]
        shape = info.shape or (1,)
        rows = raw.reshape(-1, gguf_quants.quant_shape_to_byte_shape(shape, info.qtype)[-1])
        out = np.empty((rows.shape[0], shape[-1]), dtype=np.float32)
        # Row chunks bound the dequantizer's temporaries (several times its output) to ~32 MB.
        step = max(1, DEQUANTIZE_CHUNK_BYTES // (4 * out.shape[1]))
        for start in range(0, rows.shape[0], step):
            out[start : start + step] = gguf_quants.dequantize(
                rows[start : start + step], info.qtype
            )
        return out.reshape(info.shape)


class _Cursor:
    """Reads little-endian GGUF values from a bytes buffer, failing cleanly at its end."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.buffer):
            raise ConversionError("truncated GGUF file: the header ends early")
        chunk = self.buffer[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def scalar(self, fmt: str) -> Any:
        value = struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]
        # float32 metadata such as 1e-6 would otherwise read back as 9.999999974752427e-07
        return float(f"{value:.8g}") if fmt == "f" else value

    def string(self) -> str:
        return bytes(self.take(self.scalar("Q"))).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type == STRING:
            return self.string()
        if value_type == ARRAY:
            return self.array()
        if value_type not in SCALAR_FORMATS:
            raise ConversionError(
                f"not a valid GGUF file: unknown metadata value type {value_type}"
            )
        return self.scalar(SCALAR_FORMATS[value_type])

    def array(self) -> Any:
        item_type, count = self.scalar("I"), self.scalar("Q")
        if item_type == STRING:
            return [self.string() for _ in range(count)]
        if item_type in NUMPY_TYPES:
            dtype = np.dtype(NUMPY_TYPES[item_type])
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
        return [self.value(item_type) for _ in range(count)]


def read_gguf(path: Path) -> GGUFFile:
    """Parse the header of a GGUF file; tensor data stays on disk until `GGUFFile.load`."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as error:
        raise ConversionError(f"cannot read {path}: {error}") from error
    if bytes(data[:4]) != GGUF_MAGIC:
        raise ConversionError(f"{path.name} is not a GGUF file (bad magic number)")
    buffer = memoryview(data)
    cursor = _Cursor(buffer)
    cursor.take(4)
    version = cursor.scalar("I")
    if version not in (2, 3):
        raise ConversionError(f"unsupported GGUF version {version} (big-endian or too old)")
    tensor_count, kv_count = cursor.scalar("Q"), cursor.scalar("Q")
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.scalar("I"))
    infos = [_read_tensor_info(cursor) for _ in range(tensor_count)]
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cursor.pos // alignment) * alignment
    gguf = GGUFFile(path=path, metadata=metadata, _data=data)
    for name, shape, qtype, offset in infos:
        gguf.tensors[name] = _tensor_info(name, shape, qtype, data_start + offset, len(buffer))
    check_dequantizable(gguf)
    return gguf


def _read_tensor_info(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string()
    dims = [cursor.scalar("Q") for _ in range(cursor.scalar("I"))]
    return name, tuple(reversed(dims)), cursor.scalar("I"), cursor.scalar("Q")


def _tensor_info(
    name: str, shape: tuple[int, ...], qtype_id: int, offset: int, file_size: int
) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(qtype_id)
    except ValueError:
        raise ConversionError(f"tensor {name} has an unknown GGML type id {qtype_id}") from None
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if shape and shape[-1] % block_size:
        raise ConversionError(
            f"tensor {name}: row size {shape[-1]} is not a multiple of the "
            f"{qtype.name} block size {block_size}"
        )
    nbytes = prod(shape) // block_size * type_size
    if offset + nbytes > file_size:
        raise ConversionError(
            f"truncated GGUF file: tensor {name} needs bytes up to {offset + nbytes}, "
            f"the file has {file_size}"
        )
    return TensorInfo(name, shape, qtype, offset, nbytes)


def check_dequantizable(gguf: GGUFFile) -> None:
    """Fail before any work when a tensor's type has no dequantizer in the `gguf` package."""
    for qtype in {info.qtype for info in gguf.tensors.values()}:
        _, type_size = GGML_QUANT_SIZES[qtype]
        try:
            gguf_quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
        except NotImplementedError:
            example = next(i.name for i in gguf.tensors.values() if i.qtype == qtype)
            raise ConversionError(
                f"unsupported tensor type {qtype.name} (tensor {example}); "
                "re-export the GGUF with a common type such as Q8_0, Q4_K_M or F16"
            ) from None
