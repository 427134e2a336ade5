"""What /api/v1/models says of each stored model: type, format, quantization, size, context,
capabilities (vision, tool use) and its loaded instances, read from the store and model files."""

from __future__ import annotations

import re

from mlxserve.api.lmstudio.answers import (
    V1Capabilities,
    V1Instance,
    V1InstanceConfig,
    V1Model,
    V1Quantization,
)
from mlxserve.api.shared.model_files import model_file_facts, renders_tools
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import ModelRecord


def v1_models(registry: ModelRegistry, instances: list[LoadedModel]) -> list[V1Model]:
    return [
        v1_model(record, [i for i in instances if i.record.id == record.id])
        for record in registry.servable()
        if record.type != "adapter"  # LM Studio's listing has no kind for them
    ]


def v1_model(record: ModelRecord, instances: list[LoadedModel]) -> V1Model:
    template, size_label = model_file_facts(record)
    embedding = record.type == "embeddings"
    publisher, _, name = record.id.partition("/")
    entry = V1Model(
        type=model_type(record),
        publisher=publisher,
        key=record.id,
        display_name=name,
        quantization=quantization(record.quantization),
        size_bytes=record.size_bytes,
        params_string=size_label,
        loaded_instances=[v1_instance(loaded, embedding) for loaded in instances],
        max_context_length=record.max_context_length,
        format=record.format,
    )
    if not embedding:  # LM Studio leaves these out for embedding models
        entry.architecture = record.architecture
        entry.capabilities = V1Capabilities(
            vision=record.type == "vlm",
            trained_for_tool_use=renders_tools(template, record.architecture),
        )
        entry.description = None
    return entry


def model_type(record: ModelRecord) -> str:
    return "embedding" if record.type == "embeddings" else "llm"


def v1_instance(loaded: LoadedModel, embedding: bool) -> V1Instance:
    config = V1InstanceConfig(context_length=loaded.engine.context_length)
    if not embedding:
        config.parallel = loaded.engine.parallel
    return V1Instance(id=loaded.identifier, config=config)


def quantization(name: str) -> V1Quantization | None:
    """LM Studio's {name, bits_per_weight}, the bits read from the name (Q4_K_M, 4bit, bf16);
    None for a model stored unquantized."""
    if not name or name == "none":
        return None
    bits = re.search(r"\d+", name)
    return V1Quantization(name=name, bits_per_weight=int(bits.group()) if bits else None)
