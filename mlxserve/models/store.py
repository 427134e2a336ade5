"""The model store on disk: `<models_dir>/<publisher>/<name>/`, each with an `mlxserve.json`.

An MLX model directory holds config.json, model*.safetensors, tokenizer files and mlxserve.json.
A GGUF model directory holds one .gguf file and mlxserve.json with format "gguf".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mlxserve.engine.base import config_vocab_size

log = logging.getLogger(__name__)

MANIFEST = "mlxserve.json"


def mlxserve_home() -> Path:
    return Path(os.environ.get("MLXSERVE_HOME", Path.home() / ".mlxserve")).expanduser()


def default_models_dir() -> Path:
    override = os.environ.get("MLXSERVE_MODELS_DIR")
    return Path(override).expanduser() if override else mlxserve_home() / "models"


@dataclass
class ModelRecord:
    """What mlxserve.json says about a model, plus where it lives."""

    id: str  # publisher/name
    format: str  # "mlx" or "gguf"
    architecture: str  # GGUF/llama.cpp name: gemma3, llama, qwen2, bert, ...
    type: str = "llm"  # llm | vlm | embeddings
    quantization: str = "none"  # 4bit, 8bit, bf16, f16, f32, or a GGUF type such as Q4_K_M
    max_context_length: int = 0
    source: str = ""  # what it was converted or imported from
    path: str = ""  # the model directory (not stored in the manifest)
    gguf_file: str = ""  # file name inside the directory, for format "gguf"
    mmproj_file: str = ""  # a GGUF vision model's projector, next to its weights
    origin: str = "store"  # store | huggingface | lmstudio: where it was found (not stored)
    tool_format: str = ""  # a tool-call family named by hand, for a template that hides its own
    kv_bits: int | None = None  # a quantized KV cache (4 or 8 bits) to load with; None: full
    kv_group_size: int | None = None  # elements sharing a scale in that cache; None: 64

    def manifest(self) -> dict:
        data = asdict(self)
        data.pop("path")
        data.pop("origin")
        for option in ("kv_bits", "kv_group_size"):  # written only when set by hand
            if data[option] is None:
                data.pop(option)
        return data

    @property
    def directory(self) -> Path:
        return Path(self.path)

    @property
    def vocab_size(self) -> int | None:
        """From an MLX model's config.json (None for other formats or an unreadable config)."""
        try:
            return config_vocab_size(json.loads((self.directory / "config.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def size_bytes(self) -> int:
        """The model's files; a GGUF model's directory may hold other quantizations too."""
        if self.gguf_file:
            names = [self.gguf_file, self.mmproj_file] if self.mmproj_file else [self.gguf_file]
            return sum((self.directory / name).stat().st_size for name in names)
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())


def write_manifest(model_dir: Path, record: ModelRecord) -> None:
    """Written whole or not at all: a crash mid-write leaves the previous manifest (or none)."""
    staged = model_dir / f".{MANIFEST}.{os.getpid()}.tmp"
    staged.write_text(json.dumps(record.manifest(), indent=2) + "\n")
    os.replace(staged, model_dir / MANIFEST)


def read_record(model_dir: Path) -> ModelRecord:
    data = json.loads((model_dir / MANIFEST).read_text())
    known = {f.name for f in fields(ModelRecord)}
    return ModelRecord(**{k: v for k, v in data.items() if k in known}, path=str(model_dir))


def model_dir_for(models_dir: Path, model_id: str) -> Path:
    publisher, _, name = model_id.partition("/")
    if not publisher or not name or "/" in name or ".." in (publisher, name):
        raise ValueError(f"model id must look like publisher/name, got {model_id!r}")
    return models_dir / publisher / name


def list_models(models_dir: Path) -> list[ModelRecord]:
    """Every readable model in the store; one whose manifest is broken is skipped with a warning."""
    if not models_dir.is_dir():
        return []
    records = []
    for manifest in sorted(models_dir.glob(f"*/*/{MANIFEST}")):
        try:
            records.append(read_record(manifest.parent))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping %s: its %s cannot be read (%s)", manifest.parent, MANIFEST, exc)
    return records


def find_model(models_dir: Path, model_id: str) -> ModelRecord | None:
    try:
        model_dir = model_dir_for(models_dir, model_id)
    except ValueError:
        return None
    return read_record(model_dir) if (model_dir / MANIFEST).is_file() else None


def delete_model(models_dir: Path, model_id: str) -> bool:
    """Remove a store model's directory; False when the store has no model of that id."""
    record = find_model(models_dir, model_id)
    if record is None:
        return False
    # The manifest goes first: a removal cut short leaves no half model the store would list.
    (record.directory / MANIFEST).unlink()
    shutil.rmtree(record.directory)
    return True


def copy_model(models_dir: Path, record: ModelRecord, new_id: str) -> ModelRecord:
    """The model under a second id in the store: its files hard-linked where the file system
    allows (no second copy of the weights), else copied. Refused if `new_id` exists."""
    target = model_dir_for(models_dir, new_id)
    if target.exists():
        raise FileExistsError(f"model '{new_id}' already exists")
    names = [record.gguf_file, record.mmproj_file] if record.gguf_file else None
    files = [record.directory / n for n in names if n] if names else _model_files(record)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.mkdir(parents=True)
    for source in files:
        try:
            os.link(source.resolve(), staging / source.name)
        except OSError:  # another device, or a file system without hard links
            shutil.copy2(source, staging / source.name)
    copied = dataclasses.replace(record, id=new_id, path=str(target), origin="store")
    write_manifest(staging, copied)
    os.replace(staging, target)
    return copied


def _model_files(record: ModelRecord) -> list[Path]:
    return [f for f in record.directory.iterdir() if f.is_file() and f.name != MANIFEST]
