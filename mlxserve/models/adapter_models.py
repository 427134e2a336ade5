"""A LoRA adapter as the registry serves it: its base model's engine, requests tagged with the
adapter, and an unload that frees the adapter alone (the base stays loaded)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mlxserve.engine.base import EngineModel, EngineRequest, GenerationEvent, Unsupported
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.store import ModelRecord

if TYPE_CHECKING:
    from mlxserve.models.registry import ModelRegistry


class AdapterEngine:
    """The base model's engine as seen through one adapter; everything else is the base's."""

    def __init__(self, base: EngineModel, adapter: str):
        self.base = base
        self.adapter = adapter

    def __getattr__(self, attribute: str):
        return getattr(self.base, attribute)

    def generate(self, request: EngineRequest) -> AsyncIterator[GenerationEvent]:
        request.adapter = self.adapter
        return self.base.generate(request)

    async def prompt_logprobs(self, tokens: list[int], top: int):
        message = "the prompt's log-probabilities (echo with logprobs) are not served for adapters"
        raise Unsupported(message, param="echo")

    async def close(self) -> None:
        await self.base.unload_adapter(self.adapter)


async def load_adapter_model(
    registry: ModelRegistry,
    record: ModelRecord,
    identifier: str,
    ttl: float | None,
    jit: bool,
) -> LoadedModel:
    """Load the adapter's base model if it is not loaded (as any load would), then the adapter
    into it; the adapter is registered under `identifier`."""
    base = await registry.load(record.source, ttl=ttl, jit=jit)
    name = record.directory.name
    nbytes = await base.engine.load_adapter(name, record.directory)
    if identifier in registry.loaded:  # another request loaded it meanwhile
        return registry.loaded[identifier]
    engine = AdapterEngine(base.engine, name)
    loaded = LoadedModel(record, engine, identifier, ttl, jit=jit, memory_bytes=nbytes)
    registry.loaded[identifier] = loaded
    registry.idle.watch()
    return loaded


def adapters_of(registry: ModelRegistry, base: LoadedModel) -> list[str]:
    """The identifiers of the adapters loaded into `base`'s engine."""
    return [
        identifier
        for identifier, loaded in registry.loaded.items()
        if isinstance(loaded.engine, AdapterEngine) and loaded.engine.base is base.engine
    ]
