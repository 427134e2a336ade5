"""Registering a GGUF file in the store, for the llama.cpp engine to serve as it is."""

from __future__ import annotations

import mmap
import os
import shutil
import struct
from pathlib import Path

from gguf import LlamaFileType

from mlxserve.models.store import ModelRecord, model_dir_for, write_manifest

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
        return fields


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


def gguf_metadata(path: Path) -> dict:
    """Architecture, context length and file type from the GGUF header."""
    fields = read_scalar_fields(path)
    arch = fields["general.architecture"]
    file_type = fields.get("general.file_type")
    quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else ""
    return {
        "architecture": arch,
        "context_length": int(fields.get(f"{arch}.context_length", 0)),
        "quantization": quant,
        "pooling": fields.get(f"{arch}.pooling_type"),
    }


def register_gguf(path: Path, models_dir: Path, model_id: str) -> ModelRecord:
    """Link (or copy, across file systems) the file into the store and write its manifest."""
    meta = gguf_metadata(path)
    target = model_dir_for(models_dir, model_id)
    target.mkdir(parents=True, exist_ok=True)
    linked = target / path.name
    if not linked.exists():
        try:
            os.link(path, linked)
        except OSError:
            shutil.copy2(path, linked)
    record = ModelRecord(
        id=model_id,
        format="gguf",
        architecture=meta["architecture"],
        type="embeddings" if meta["pooling"] else "llm",
        quantization=meta["quantization"],
        max_context_length=meta["context_length"],
        source=str(path),
        path=str(target),
        gguf_file=path.name,
    )
    write_manifest(target, record)
    return record
