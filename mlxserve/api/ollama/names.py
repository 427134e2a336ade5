"""Ollama's model names (`name:tag`, `namespace/name:tag`) and the store's ids
(`publisher/name`, a GGUF quantization as `publisher/name@QUANT`): `:latest` or no tag is the
model itself, another tag a quantization; a bare name is the one model of that name."""

from __future__ import annotations

import asyncio

from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.errors import RequestError

LATEST = "latest"
LIBRARY = "library"  # the namespace of a name copied without one, as Ollama's own library


def split_tag(name: str) -> tuple[str, str]:
    """("publisher/name", "tag"); the tag is "latest" when none is given."""
    base, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        return name, LATEST
    return base, tag or LATEST


def ollama_name(model_id: str) -> str:
    """The name Ollama's clients show for a store id."""
    base, at, quant = model_id.partition("@")
    return f"{base}:{quant if at else LATEST}"


def store_id(name: str) -> str:
    """The store id a new name (a copy's destination) is written under."""
    base, tag = split_tag(name)
    if "/" not in base:
        base = f"{LIBRARY}/{base}"
    return base if tag == LATEST else f"{base}@{tag}"


def candidates(name: str) -> list[str]:
    base, tag = split_tag(name)
    wanted = base if tag == LATEST else f"{base}@{tag}"
    return [name, wanted] if name != wanted else [name]


async def resolve_name(registry: ModelRegistry, name: str) -> str:
    """The loaded identifier or store id an Ollama name stands for; Ollama's 404 if none."""
    for candidate in candidates(name):
        if candidate in registry.loaded or await registry.find(candidate) is not None:
            return candidate
    wanted = candidates(name)[-1]
    if "/" not in wanted:  # a bare name: the one model whose name part it is
        servable = await _servable_ids(registry)
        matches = [i for i in servable if i.partition("/")[2] == wanted]
        if len(matches) == 1:
            return matches[0]
    raise not_found(name)


def not_found(name: str) -> RequestError:
    return RequestError(404, f"model '{name}' not found", "model", "model_not_found")


async def _servable_ids(registry: ModelRegistry) -> list[str]:
    records = await asyncio.to_thread(registry.servable)
    return [*registry.loaded, *(record.id for record in records)]
