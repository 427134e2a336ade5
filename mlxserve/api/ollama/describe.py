"""What Ollama's model listings say of a model, read from the store and the model's files:
details (format, family, size label, quantization), a digest, the time it was written, and
/api/show's template, model_info and capabilities. These read the disk: call them in a thread."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

from mlxserve.api.ollama.answers import ModelDescription, ModelDetails, RunningModel, TagsModel
from mlxserve.api.ollama.names import ollama_name
from mlxserve.api.shared.model_files import model_file_facts, renders_tools
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.store import ModelRecord
from mlxserve.models.templates import builtin_chat_template
from mlxserve.pipeline.reasoning import reasoning_family

NEVER = "9999-12-31T23:59:59Z"  # the expiry of a model kept loaded for good


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def details(record: ModelRecord) -> ModelDetails:
    _, size_label = model_file_facts(record)
    return ModelDetails(
        parent_model="",
        format=record.format,
        family=record.architecture,
        families=[record.architecture],
        parameter_size=size_label or "",
        quantization_level=record.quantization,
    )


def digest(record: ModelRecord) -> str:
    """Stands for Ollama's manifest digest: the store's manifest of the model, hashed."""
    manifest = json.dumps({**record.manifest(), "path": record.path}, sort_keys=True)
    return hashlib.sha256(manifest.encode()).hexdigest()


def tags_entry(record: ModelRecord, name: str = "") -> TagsModel:
    name = name or ollama_name(record.id)
    return TagsModel(
        name=name,
        model=name,
        modified_at=iso(record.directory.stat().st_mtime),
        size=record.size_bytes,
        digest=digest(record),
        details=details(record),
    )


def running_entry(loaded: LoadedModel, record_details: ModelDetails) -> RunningModel:
    name = ollama_name(loaded.identifier)
    expires = NEVER
    if loaded.ttl is not None:
        expires = iso(time.time() + max(loaded.ttl - loaded.idle_seconds(), 0.0))
    on_gpu = "gpu" in loaded.engine.runtime_info().get("device", "").lower()
    return RunningModel(
        name=name,
        model=name,
        size=loaded.memory_bytes,
        digest=digest(loaded.record),
        details=record_details,
        expires_at=expires,
        size_vram=loaded.memory_bytes if on_gpu else 0,
        context_length=loaded.engine.context_length,
    )


def description(record: ModelRecord) -> ModelDescription:
    template, _ = model_file_facts(record)
    template = template or builtin_chat_template(record.architecture) or ""
    return ModelDescription(
        modelfile="",
        parameters="",
        template=template,
        details=details(record),
        model_info={
            "general.architecture": record.architecture,
            "general.basename": record.id.partition("/")[2],
            f"{record.architecture}.context_length": record.max_context_length,
        },
        capabilities=capabilities(record, template),
        modified_at=iso(record.directory.stat().st_mtime),
    )


def capabilities(record: ModelRecord, template: str) -> list[str]:
    if record.type == "embeddings":
        return ["embedding"]
    if record.type in ("speech", "rerank"):
        return []  # Ollama has no word for these; they cannot chat or complete
    found = {
        "completion": True,
        "tools": renders_tools(template, record.architecture),
        "thinking": reasoning_family(template) is not None,
        "vision": record.type == "vlm",
    }
    return [name for name, present in found.items() if present]
