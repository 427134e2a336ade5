"""/api/v0's answers built from their models: model entries with load state, loaded instances,
load results, and the stats, model_info and runtime that native generation responses add to the
OpenAI fields."""

from __future__ import annotations

import asyncio

from mlxserve.api.lmstudio.answers import (
    V0Instance,
    V0LoadResult,
    V0Model,
    V0ModelInfo,
    V0Stats,
)
from mlxserve.engine.base import GenerationStats
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import ModelRecord


def v0_model(record: ModelRecord, loaded: LoadedModel | None, model_id: str = "") -> V0Model:
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
        if loaded.engine.kv_bits:
            entry.kv_bits = loaded.engine.kv_bits
    tool_format = (loaded.family or loaded.tool_format if loaded else "") or record.tool_format
    if tool_format:
        entry.tool_format = tool_format
    return entry


async def v0_models(registry: ModelRegistry) -> list[V0Model]:
    """Every servable model, then each model loaded under an identifier of its own; the
    folders are read off the event loop."""
    loaded = dict(registry.loaded)  # taken on the event loop, which changes it
    entries = [v0_model(r, loaded.get(r.id)) for r in await asyncio.to_thread(registry.servable)]
    for identifier, instance in loaded.items():
        if identifier != instance.record.id:
            entries.append(v0_model(instance.record, instance, identifier))
    return entries


async def find_v0_model(registry: ModelRegistry, model_id: str) -> V0Model | None:
    return next((entry for entry in await v0_models(registry) if entry.id == model_id), None)


def v0_instance(loaded: LoadedModel, now: float | None = None) -> V0Instance:
    """A loaded model as `mlxserve ps` shows it; one split across the ranks of a distributed
    server says how (mode, backend, ranks, this process's rank)."""
    instance = V0Instance(
        identifier=loaded.identifier,
        model=loaded.record.id,
        engine=loaded.engine.engine_name,
        format=loaded.record.format,
        context_length=loaded.engine.context_length,
        memory_bytes=loaded.memory_bytes,
        ttl=loaded.ttl,
        idle_seconds=round(loaded.idle_seconds(now), 3),
        active_requests=loaded.active_requests,
        jit=loaded.jit,
        loaded_at=int(loaded.loaded_at),
    )
    split = getattr(loaded.engine, "distributed", None)
    if split:
        instance.distributed = split
    return instance


def stats_object(stats: GenerationStats) -> V0Stats:
    figures = V0Stats(
        tokens_per_second=stats.tokens_per_second,
        time_to_first_token=stats.time_to_first_token,
        generation_time=stats.generation_time,
        stop_reason=stats.stop_reason,
    )
    if stats.draft is not None:  # speculative decoding, in LM Studio's names
        figures.draft_model = stats.draft_model
        figures.total_draft_tokens_count = stats.draft.drafted
        figures.accepted_draft_tokens_count = stats.draft.accepted
        figures.rejected_draft_tokens_count = stats.draft.rejected
        figures.ignored_draft_tokens_count = stats.draft.ignored
    return figures


def native_extras(loaded: LoadedModel, stats: GenerationStats) -> dict:
    record = loaded.record
    model_info = V0ModelInfo(
        arch=record.architecture,
        quant=record.quantization,
        format=record.format,
        context_length=loaded.engine.context_length,
    )
    return {
        "stats": stats_object(stats).as_dict(),
        "model_info": model_info.as_dict(),
        "runtime": loaded.engine.runtime_info(),
    }


def load_result(loaded: LoadedModel, seconds: float, already_loaded: bool) -> V0LoadResult:
    """The model's entry and its instance's fields, as each is sent."""
    return V0LoadResult(
        **v0_model(loaded.record, loaded, loaded.identifier).as_dict(),
        **v0_instance(loaded).as_dict(),
        load_time=round(seconds, 3),
        already_loaded=already_loaded,
    )
