"""Reading a GGUF file's header fields without parsing its tensors or vocabulary: what the store,
the memory estimate and the llama.cpp engine need to know about a GGUF."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

# GGUF value types: struct format of each fixed-size scalar; 8 is string, 9 is array.
SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
STRING, ARRAY = 8, 9


def read_scalar_fields(path: Path) -> dict:
    """The header's scalar and string fields; arrays (the vocabulary) are skipped, which keeps this
    far faster than a full GGUF parse."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _read_fields(buf, path)[0]


def read_header(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The scalar and string fields, and each tensor's dimensions as GGUF lists them (innermost
    first): `gguf.GGUFReader` takes 16 s over Gemma's vocabulary on a 2-core machine."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        fields, offset = _read_fields(buf, path)
        (tensor_count,) = struct.unpack_from("<Q", buf, 8)
        shapes = {}
        for _ in range(tensor_count):
            name, offset = _read_string(buf, offset)
            (dims,) = struct.unpack_from("<I", buf, offset)
            shapes[name] = struct.unpack_from(f"<{dims}Q", buf, offset + 4)
            offset += 4 + 8 * dims + 4 + 8  # the dimensions, then the type and the data offset
        return fields, shapes


def _read_fields(buf, path: Path) -> tuple[dict, int]:
    """The fields but arrays, and the offset where the tensors' descriptions start."""
    if buf[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    _version, _tensors, kv_count = struct.unpack_from("<IQQ", buf, 4)
    offset, fields = 24, {}
    for _ in range(kv_count):
        key, offset = _read_string(buf, offset)
        (value_type,) = struct.unpack_from("<I", buf, offset)
        value, offset = _read_value(buf, offset + 4, value_type)
        if value_type != ARRAY:
            fields[key] = value
    return fields, offset


def _read_string(buf, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, offset)
    start = offset + 8
    return bytes(buf[start : start + length]).decode("utf-8", "replace"), start + length


def _read_value(buf, offset: int, value_type: int):
    if value_type == STRING:
        return _read_string(buf, offset)
    if value_type == ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, offset)
        offset += 12
        if item_type in SCALAR_FORMATS:
            return None, offset + count * struct.calcsize(SCALAR_FORMATS[item_type])
        for _ in range(count):
            _, offset = _read_value(buf, offset, item_type)
        return None, offset
    fmt = SCALAR_FORMATS[value_type]
    return struct.unpack_from(fmt, buf, offset)[0], offset + struct.calcsize(fmt)
