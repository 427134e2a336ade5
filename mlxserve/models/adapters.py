"""LoRA adapters in the store, each beside its base model: `<base dir>/adapters/<name>/`.

An adapter folder is mlx-lm's or PEFT's (engine/adapter_format.py). Clients name one
`<base id>@<name>`; it is listed with type "adapter".
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from mlxserve.engine.adapter_format import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_WEIGHTS,
    is_adapter_folder,
    lora_scale,
    read_adapter_config,
    weights_file,
)
from mlxserve.models.store import ModelRecord

ADAPTERS_DIR = "adapters"
SEPARATOR = "@"
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def split_adapter_id(model_id: str) -> tuple[str, str] | None:
    """(base id, adapter name) of a `base@adapter` id; None for any other id."""
    base, separator, name = model_id.rpartition(SEPARATOR)
    return (base, name) if separator and base and name else None


def adapter_records(base: ModelRecord) -> list[ModelRecord]:
    """The adapters stored beside a language model (MLX or GGUF), as records of their own."""
    folder = base.directory / ADAPTERS_DIR
    if base.type != "llm" or not folder.is_dir():
        return []
    found = sorted(d for d in folder.iterdir() if d.is_dir() and is_adapter_folder(d))
    return [adapter_record(base, directory) for directory in found]


def adapter_record(base: ModelRecord, directory: Path) -> ModelRecord:
    return dataclasses.replace(
        base,
        id=f"{base.id}{SEPARATOR}{directory.name}",
        type="adapter",
        source=base.id,  # what it adapts: the registry loads that first
        path=str(directory),
        gguf_file="",
        mmproj_file="",
    )


def find_adapter(base: ModelRecord | None, name: str) -> ModelRecord | None:
    if base is None:
        return None
    return next((r for r in adapter_records(base) if r.id == f"{base.id}{SEPARATOR}{name}"), None)


def import_adapter(
    source: Path, base: ModelRecord, name: str | None = None, overwrite: bool = False
) -> ModelRecord:
    """Copy an adapter folder (mlx-lm's or PEFT's) beside its base model in the store; the folder
    appears whole or not at all."""
    if not is_adapter_folder(source):
        raise ValueError(
            f"{source} is not an adapter folder ({ADAPTER_CONFIG} with {ADAPTER_WEIGHTS} or "
            f"{PEFT_WEIGHTS})"
        )
    try:
        lora_scale(read_adapter_config(source))
    except ValueError as exc:
        raise ValueError(f"adapter {source}: {exc}") from exc
    if base.type != "llm":
        raise ValueError(f"'{base.id}' is not a language model: adapters need one")
    name = name or source.resolve().name
    if not ADAPTER_NAME.match(name):
        raise ValueError(f"adapter name must be letters, digits, '.', '_' or '-', got {name!r}")
    target = base.directory / ADAPTERS_DIR / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"adapter '{base.id}{SEPARATOR}{name}' already exists")
    staging = target.with_name(f".{name}.{os.getpid()}.tmp")
    staging.mkdir(parents=True)
    for path in (source / ADAPTER_CONFIG, weights_file(source)):
        shutil.copy2(path, staging / path.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return adapter_record(base, target)
