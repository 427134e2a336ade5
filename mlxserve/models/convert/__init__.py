"""Convert GGUF files and Hugging Face model directories into MLX model directories in the store.

No PyTorch: GGUF tensors are dequantized with the `gguf` package, tokenizers are built with
`tokenizers`, weights are cast or quantized with MLX and written as safetensors.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.gguf_convert import ConvertedModel, convert_gguf
from mlxserve.models.convert.gguf_reader import GGUFFile, read_gguf
from mlxserve.models.convert.quantize import parse_quantize
from mlxserve.models.convert.writer import directory_size, staged_model_dir
from mlxserve.models.speech import import_whisper_folder, is_whisper_folder
from mlxserve.models.store import ModelRecord, find_model, model_dir_for, write_manifest

__all__ = ["ConversionError", "convert_model", "default_model_id"]

log = logging.getLogger(__name__)

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def convert_model(
    source: Path,
    models_dir: Path,
    model_id: str | None = None,
    quantize: str = "none",
    group_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
) -> ModelRecord:
    """Convert `source` (a .gguf file or a Hugging Face model directory) into
    `models_dir/<publisher>/<name>/` and return its manifest record. A CTranslate2 Whisper
    folder is copied unchanged (the speech engine reads that format; `quantize` is ignored).

    quantize: "4" or "8" (MLX affine, `group_size` 32/64/128, unquantized layers in bf16),
    "bf16", "f16", or "none" (float32 for GGUF, the checkpoint's dtype for Hugging Face).
    The directory appears complete or not at all; an existing model is replaced only with
    `overwrite`. Raises ConversionError with a one-line message on bad input.
    """
    started = time.monotonic()
    source = Path(source).expanduser()
    models_dir = Path(models_dir).expanduser()
    quant = parse_quantize(quantize, group_size)
    if not source.exists():
        raise ConversionError(f"{source} does not exist")
    if source.is_dir() and is_whisper_folder(source):
        return _import_whisper(source, models_dir, model_id, overwrite)
    gguf = None if source.is_dir() else read_gguf(source)
    model_id = _checked_id(model_id or default_model_id(source, gguf))
    final_dir = model_dir_for(models_dir, model_id)
    with staged_model_dir(final_dir, models_dir, overwrite) as staging:
        if gguf is not None:
            result = convert_gguf(gguf, staging, quant, progress)
        else:
            from mlxserve.models.convert.hf import convert_hf_dir

            result = convert_hf_dir(source, staging, quant, progress)
        record = _record(model_id, result, source, final_dir)
        write_manifest(staging, record)
    log.info(
        "converted %s in %.1f s: %.1f MB on disk, %s",
        model_id,
        time.monotonic() - started,
        directory_size(final_dir) / 1e6,
        record.quantization,
    )
    return record


def _import_whisper(
    source: Path, models_dir: Path, model_id: str | None, overwrite: bool
) -> ModelRecord:
    """A CTranslate2 Whisper folder is copied as it is: faster-whisper serves that format."""
    model_id = _checked_id(model_id or default_model_id(source))
    if find_model(models_dir, model_id) is not None and not overwrite:
        raise ConversionError(f"model {model_id} exists; pass --overwrite to replace it")
    return import_whisper_folder(source, models_dir, model_id)


def _record(model_id: str, result: ConvertedModel, source: Path, final_dir: Path) -> ModelRecord:
    return ModelRecord(
        id=model_id,
        format="mlx",
        architecture=result.architecture,
        type=result.type,
        quantization=result.quantization,
        max_context_length=result.max_context_length,
        source=str(source.resolve()),
        path=str(final_dir),
    )


def _checked_id(model_id: str) -> str:
    if not MODEL_ID.match(model_id) or ".." in model_id:
        raise ConversionError(
            f"model id must look like publisher/name (letters, digits, . _ -), got {model_id!r}"
        )
    return model_id


def slug(text: str) -> str:
    """Lower-case, with runs of anything but letters, digits, '.', '_' and '-' turned into '-'."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9._-]+", "-", text.lower())).strip("-._")


def default_model_id(source: Path, gguf: GGUFFile | None = None) -> str:
    """`organization/name` from GGUF metadata, else `local/<name>`; for a Hugging Face directory
    in the hub cache (`models--org--name/snapshots/<rev>`) `org/name`, else `local/<dir name>`."""
    if gguf is not None:
        meta = gguf.metadata
        basename = meta.get("general.basename")
        if basename and meta.get("general.size_label"):
            basename = f"{basename}-{meta['general.size_label']}"
        name = slug(str(meta.get("general.name") or basename or "")) or slug(source.stem)
        publisher = slug(str(meta.get("general.organization") or "")) or "local"
        return f"{publisher}/{name or 'model'}"
    hub = next((p.name for p in source.resolve().parents if p.name.startswith("models--")), None)
    if hub and hub.count("--") >= 2:
        _, org, name = hub.split("--", 2)
        return f"{slug(org)}/{slug(name)}"
    return f"local/{slug(source.resolve().name) or 'model'}"
