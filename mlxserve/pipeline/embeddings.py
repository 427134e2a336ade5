"""Embeddings: the model found (or loaded), the request bounded as OpenAI bounds it and counted
into the model's queue (a 429 when full, as for generation), then embedded in slices, within
the server's time limit (--request-timeout).

Bounds: at most 2048 inputs, 8192 tokens each and 300,000 in all. A token array is measured
by its length; a text before it is tokenized, at 4 characters a token (32,768 characters each,
1,200,000 in all), so a huge text is refused without reading it. Inputs are embedded a slice
at a time, shortest first, so that no engine call tokenizes much while the event loop waits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.deadline import timeout_error
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.prepare import ServerLimits

MAX_INPUTS = 2048  # per request, as OpenAI allows
MAX_INPUT_TOKENS = 8192  # per input, as OpenAI allows
MAX_TOTAL_TOKENS = 300_000  # per request, as OpenAI allows
CHARACTERS_PER_TOKEN = 4  # how a text is measured before it is tokenized
SLICE_INPUTS = 64  # inputs per engine call: two of the MLX engine's batches
SLICE_TOKENS = 8192  # tokens per engine call: tokenizing them takes a few milliseconds

Inputs = list[str] | list[list[int]]


@dataclass
class Embedded:
    loaded: LoadedModel
    vectors: np.ndarray  # one unit-length row per input, in the inputs' order
    prompt_tokens: int  # tokens read, after each input was cut to the model's window


def check_inputs(inputs: list) -> None:
    """Refuse a request past the bounds: too many inputs, one too long, or too much in all.
    Items that are neither text nor token arrays are left to the request's validation."""
    if len(inputs) > MAX_INPUTS:
        message = f"input: at most {MAX_INPUTS} inputs per request, got {len(inputs)}"
        raise RequestError(400, message, "input", "too_many_inputs")
    total = 0
    for index, item in enumerate(inputs):
        tokens = measured_tokens(item)
        if tokens > MAX_INPUT_TOKENS:
            text = isinstance(item, str)
            limit = MAX_INPUT_TOKENS * (CHARACTERS_PER_TOKEN if text else 1)
            unit = "characters" if text else "tokens"
            message = f"input[{index}]: at most {limit} {unit} per input, got {len(item)}"
            raise RequestError(400, message, f"input[{index}]", "input_too_long")
        total += tokens
    if total > MAX_TOTAL_TOKENS:
        message = (
            f"input: at most {MAX_TOTAL_TOKENS} tokens per request ({CHARACTERS_PER_TOKEN} "
            f"characters of text count as one), got about {total}"
        )
        raise RequestError(400, message, "input", "request_too_large")


def measured_tokens(item) -> int:
    if isinstance(item, str):
        return -(-len(item) // CHARACTERS_PER_TOKEN)
    return len(item) if isinstance(item, list) else 0


async def embed(
    registry: ModelRegistry, model: str, inputs: Inputs, limits: ServerLimits
) -> Embedded:
    """The inputs' vectors from the embedding model `model` routes to."""
    started = asyncio.get_running_loop().time()
    check_inputs(inputs)
    loaded = await registry.resolve(model)
    if loaded.record.type != "embeddings" or not hasattr(loaded.engine, "embed"):
        message = f"model '{loaded.identifier}' is not an embedding model"
        raise RequestError(400, message, "model", "model_not_embedding")
    release = loaded.admit()
    try:
        if not limits.request_timeout:
            return await _embed_slices(loaded, inputs)
        try:
            async with asyncio.timeout_at(started + limits.request_timeout):
                return await _embed_slices(loaded, inputs)
        except TimeoutError:
            raise timeout_error(limits.request_timeout) from None
    finally:
        release()


async def _embed_slices(loaded: LoadedModel, inputs: Inputs) -> Embedded:
    vectors, read = None, 0
    for rows in _slices(inputs):
        part, tokens = await loaded.engine.embed([inputs[row] for row in rows])
        if vectors is None:
            vectors = np.zeros((len(inputs), part.shape[1]), dtype=np.float32)
        vectors[rows] = part
        read += tokens
    return Embedded(loaded, vectors, read)


def _slices(inputs: Inputs) -> list[list[int]]:
    """Row numbers in engine calls of bounded size, inputs of like length together (little
    padding in a batch)."""
    slices, current, size = [], [], 0
    for row in sorted(range(len(inputs)), key=lambda row: len(inputs[row])):
        tokens = measured_tokens(inputs[row])
        if current and (len(current) == SLICE_INPUTS or size + tokens > SLICE_TOKENS):
            slices.append(current)
            current, size = [], 0
        current.append(row)
        size += tokens
    return [*slices, current] if current else slices


def shortened(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """OpenAI's (and Ollama's) `dimensions`: keep the first N components and renormalize."""
    if dimensions > vectors.shape[1]:
        raise RequestError(422, f"dimensions must be at most {vectors.shape[1]}", "dimensions")
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
