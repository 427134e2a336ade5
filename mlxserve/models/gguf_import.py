"""Registering a GGUF file in the store, for the llama.cpp engine to serve as it is."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gguf import LlamaFileType

from mlxserve.gguf_header import read_scalar_fields
from mlxserve.models.store import ModelRecord, model_dir_for, write_manifest


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


RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK


class NotAProjector(ValueError):
    pass


def register_gguf(
    path: Path, models_dir: Path, model_id: str, mmproj: Path | None = None
) -> ModelRecord:
    """Link (or copy, across file systems) the file, and a vision model's projector, into the
    store and write its manifest."""
    meta = gguf_metadata(path)
    if mmproj is not None:
        _check_projector(mmproj)
    target = model_dir_for(models_dir, model_id)
    target.mkdir(parents=True, exist_ok=True)
    for source in (path, mmproj) if mmproj is not None else (path,):
        _link(source, target / source.name)
    record = ModelRecord(
        id=model_id,
        format="gguf",
        architecture=meta["architecture"],
        type=gguf_model_type(meta["pooling"], mmproj),
        quantization=meta["quantization"],
        max_context_length=meta["context_length"],
        source=str(path),
        path=str(target),
        gguf_file=path.name,
        mmproj_file=mmproj.name if mmproj is not None else "",
    )
    write_manifest(target, record)
    return record


def _check_projector(path: Path) -> None:
    """llama.cpp's projector files are GGUF files of architecture `clip` with a vision part."""
    try:
        fields = read_scalar_fields(path)
    except (OSError, ValueError) as error:
        raise NotAProjector(f"{path} is not a GGUF file: {error}") from error
    if fields.get("general.architecture") != "clip" or not fields.get("clip.has_vision_encoder"):
        raise NotAProjector(f"{path} is not a vision projector (mmproj) GGUF file")


def _link(source: Path, linked: Path) -> None:
    if not linked.exists():
        try:
            os.link(source, linked)
        except OSError:
            shutil.copy2(source, linked)


def gguf_model_type(pooling: int | None, mmproj: Path | None) -> str:
    """A pooling model embeds, or reranks with rank pooling (a classifier's score); any other is
    a language model, with images when it has a projector."""
    if pooling == RANK_POOLING:
        return "rerank"
    return "embeddings" if pooling else "vlm" if mmproj else "llm"
