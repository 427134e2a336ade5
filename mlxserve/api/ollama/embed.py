"""/api/embed (one vector per input) and the older /api/embeddings (one prompt, one vector):
the same pipeline, and so the same numbers, as /v1/embeddings."""

from __future__ import annotations

import asyncio
import time

from quart import Blueprint

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.ollama.answers import EmbeddingResult, EmbedResult
from mlxserve.api.ollama.lifecycle import apply_keep_alive, load_for
from mlxserve.api.ollama.names import resolve_name
from mlxserve.api.ollama.protocol import EmbeddingsRequest, EmbedRequest, keep_alive_seconds
from mlxserve.api.ollama.render import nanoseconds
from mlxserve.api.state import server_state
from mlxserve.pipeline.embeddings import Embedded, check_inputs, embed, shortened
from mlxserve.pipeline.errors import RequestError

blueprint = Blueprint("ollama_embed", __name__)


@blueprint.post("/api/embed")
@answers(EmbedResult)
@with_body(EmbedRequest)
async def embed_inputs(body: EmbedRequest):
    """A vector for each input."""
    started = time.monotonic()
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or "" in inputs:
        raise RequestError(400, "input must not be empty", "input", "empty_input")
    check_inputs(inputs)
    embedded, load_seconds = await _embedded(body.model, inputs, body.keep_alive)
    vectors = embedded.vectors
    if body.dimensions:
        vectors = shortened(vectors, body.dimensions)
    result = EmbedResult(
        model=body.model,
        embeddings=await asyncio.to_thread(vectors.tolist),  # many numbers: off the loop
        total_duration=nanoseconds(time.monotonic() - started),
        load_duration=nanoseconds(load_seconds),
        prompt_eval_count=embedded.prompt_tokens,
    )
    return result.as_dict()


@blueprint.post("/api/embeddings")
@answers(EmbeddingResult)
@with_body(EmbeddingsRequest)
async def embed_prompt(body: EmbeddingsRequest):
    """The older form: one prompt's vector (an empty prompt has an empty one, as in Ollama)."""
    if not body.prompt:
        return EmbeddingResult(embedding=[]).as_dict()
    embedded, _ = await _embedded(body.model, [body.prompt], body.keep_alive)
    return EmbeddingResult(embedding=embedded.vectors[0].tolist()).as_dict()


async def _embedded(name: str, inputs: list[str], keep_alive) -> tuple[Embedded, float]:
    """The vectors and the seconds spent loading the model for them."""
    state = server_state()
    model_id = await resolve_name(state.registry, name)
    try:
        keep = keep_alive_seconds(keep_alive)
    except ValueError as exc:
        raise RequestError(400, f"keep_alive: {exc}", "keep_alive", "invalid_value") from exc
    load_seconds = await load_for(state.registry, model_id, None, keep)
    embedded = await embed(state.registry, model_id, inputs, state.limits)
    await apply_keep_alive(state.registry, model_id, keep)
    return embedded, load_seconds
