"""The /api/v0 shapes: model entries with load state, and the stats, model_info and runtime
objects that native generation responses add to the OpenAI fields."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel

from mlxserve.engine.base import GenerationStats
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import ModelRecord


class V0Model(BaseModel):
    id: str
    object: Literal["model"]
    type: str  # llm | vlm | embeddings
    publisher: str
    arch: str
    compatibility_type: str  # the format: mlx | gguf | hf
    quantization: str
    state: Literal["loaded", "not-loaded"]
    max_context_length: int
    source: str  # store | huggingface | lmstudio (models found in place)
    loaded_context_length: int | None = None  # only when loaded
    tool_format: str | None = None  # the tool-call family: named by hand, or found once loaded


class V0ModelList(BaseModel):
    object: Literal["list"]
    data: list[V0Model]


def v0_model(record: ModelRecord, loaded: LoadedModel | None, model_id: str = "") -> dict:
    entry = V0Model(
        id=model_id or record.id,
        object="model",
        type=record.type,
        publisher=record.id.split("/")[0],
        arch=record.architecture,
        compatibility_type=record.format,
        quantization=record.quantization,
        state="loaded" if loaded else "not-loaded",
        max_context_length=record.max_context_length,
        source=record.origin,
    )
    if loaded:
        entry.loaded_context_length = loaded.engine.context_length
    tool_format = (loaded.family or loaded.tool_format if loaded else "") or record.tool_format
    if tool_format:
        entry.tool_format = tool_format
    return entry.model_dump(exclude_unset=True)


async def v0_models(registry: ModelRegistry) -> list[dict]:
    """Every servable model, then each model loaded under an identifier of its own; the
    folders are read off the event loop."""
    loaded = dict(registry.loaded)  # taken on the event loop, which changes it
    entries = [v0_model(r, loaded.get(r.id)) for r in await asyncio.to_thread(registry.servable)]
    for identifier, instance in loaded.items():
        if identifier != instance.record.id:
            entries.append(v0_model(instance.record, instance, identifier))
    return entries


async def find_v0_model(registry: ModelRegistry, model_id: str) -> dict | None:
    return next((entry for entry in await v0_models(registry) if entry["id"] == model_id), None)


def v0_instance(loaded: LoadedModel, now: float | None = None) -> dict:
    """A loaded model as `mlxserve ps` shows it; one split across the ranks of a distributed
    server says how (mode, backend, ranks, this process's rank)."""
    split = getattr(loaded.engine, "distributed", None)
    return {
        "identifier": loaded.identifier,
        "model": loaded.record.id,
        "engine": loaded.engine.engine_name,
        "format": loaded.record.format,
        "context_length": loaded.engine.context_length,
        "memory_bytes": loaded.memory_bytes,
        "ttl": loaded.ttl,
        "idle_seconds": round(loaded.idle_seconds(now), 3),
        "active_requests": loaded.active_requests,
        "jit": loaded.jit,
        "loaded_at": int(loaded.loaded_at),
        **({"distributed": split} if split else {}),
    }


def stats_object(stats: GenerationStats) -> dict:
    figures = {
        "tokens_per_second": stats.tokens_per_second,
        "time_to_first_token": stats.time_to_first_token,
        "generation_time": stats.generation_time,
        "stop_reason": stats.stop_reason,
    }
    if stats.draft is not None:  # speculative decoding, in LM Studio's names
        figures.update(
            draft_model=stats.draft_model,
            total_draft_tokens_count=stats.draft.drafted,
            accepted_draft_tokens_count=stats.draft.accepted,
            rejected_draft_tokens_count=stats.draft.rejected,
            ignored_draft_tokens_count=stats.draft.ignored,
        )
    return figures


def native_extras(loaded: LoadedModel, stats: GenerationStats) -> dict:
    record = loaded.record
    return {
        "stats": stats_object(stats),
        "model_info": {
            "arch": record.architecture,
            "quant": record.quantization,
            "format": record.format,
            "context_length": loaded.engine.context_length,
        },
        "runtime": loaded.engine.runtime_info(),
    }


def load_result(loaded: LoadedModel, seconds: float, already_loaded: bool) -> dict:
    return {
        **v0_model(loaded.record, loaded, loaded.identifier),
        **v0_instance(loaded),
        "load_time": round(seconds, 3),
        "already_loaded": already_loaded,
    }
