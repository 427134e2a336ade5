"""Embeddings: the model found (or loaded), the request counted into the model's queue (a 429
when full, as for generation), then embedded within the server's time limit
(--request-timeout)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.deadline import timeout_error
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.prepare import ServerLimits

Inputs = list[str] | list[list[int]]


@dataclass
class Embedded:
    loaded: LoadedModel
    vectors: np.ndarray  # one unit-length row per input, in the inputs' order
    prompt_tokens: int  # tokens read, after each input was cut to the model's window


async def embed(
    registry: ModelRegistry, model: str, inputs: Inputs, limits: ServerLimits
) -> Embedded:
    """The inputs' vectors from the embedding model `model` routes to."""
    started = asyncio.get_running_loop().time()
    loaded = await registry.resolve(model)
    if loaded.record.type != "embeddings" or not hasattr(loaded.engine, "embed"):
        message = f"model '{loaded.identifier}' is not an embedding model"
        raise RequestError(400, message, "model", "model_not_embedding")
    release = loaded.admit()
    try:
        if not limits.request_timeout:
            return await _embed_all(loaded, inputs)
        try:
            async with asyncio.timeout_at(started + limits.request_timeout):
                return await _embed_all(loaded, inputs)
        except TimeoutError:
            raise timeout_error(limits.request_timeout) from None
    finally:
        release()


async def _embed_all(loaded: LoadedModel, inputs: Inputs) -> Embedded:
    vectors, read = await loaded.engine.embed(inputs)
    return Embedded(loaded, vectors, read)
