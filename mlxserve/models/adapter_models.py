"""A LoRA adapter as the registry serves it: its base model's engine, requests tagged with the
adapter, and an unload that frees the adapter alone (the base stays loaded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mlxserve.engine.base import EngineModel, EngineRequest, GenerationEvent, Unsupported
from mlxserve.models.loaded import LoadedModel


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


@dataclass
class LoadedAdapter(LoadedModel):
    """An adapter's registry entry: its requests count as its base model's too, so the base is
    never unloaded as idle while they run, and they share its queue limit."""

    base: LoadedModel | None = None

    def admit(self) -> Callable[[], None]:
        release_base = self.base.admit()
        try:
            release_own = super().admit()
        except Exception:
            release_base()
            raise

        def release() -> None:
            release_own()
            release_base()

        return release


def adapters_of(loaded_models: dict[str, LoadedModel], base: LoadedModel) -> list[str]:
    """The identifiers of the adapters loaded into `base`."""
    return [
        identifier
        for identifier, loaded in loaded_models.items()
        if isinstance(loaded, LoadedAdapter) and loaded.base is base
    ]
