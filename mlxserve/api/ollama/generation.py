"""/api/chat and /api/generate: the request parsed into the pipeline's neutral one (a
conversation, or for `raw` a bare prompt), run through the shared pipeline, and answered as
newline-delimited JSON chunks (Ollama's default) or, with `stream: false`, one object. A request
with nothing to generate only loads its model, or with `keep_alive: 0` unloads it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Blueprint, jsonify, request

from mlxserve.api.http.ndjson import ndjson_response, streams_ndjson
from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.ollama.answers import ChatChunk, GenerateChunk
from mlxserve.api.ollama.lifecycle import apply_keep_alive, load_for
from mlxserve.api.ollama.names import resolve_name
from mlxserve.api.ollama.protocol import ChatMessage, ChatRequest, GenerateRequest
from mlxserve.api.ollama.render import Reply
from mlxserve.api.shared.protocol import new_id
from mlxserve.api.state import server_state
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline import request as neutral
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.generate import complete, generate
from mlxserve.pipeline.prepare import prepare

blueprint = Blueprint("ollama_generation", __name__)


@blueprint.post("/api/chat")
@streams_ndjson
@answers(ChatChunk)
@with_body(ChatRequest)
async def chat(body: ChatRequest):
    """Ollama's chat: NDJSON chunks, or one object with `stream: false`."""
    return await respond(body, [to_turn(m) for m in body.messages] or None)


@blueprint.post("/api/generate")
@streams_ndjson
@answers(GenerateChunk)
@with_body(GenerateRequest)
async def generate_text(body: GenerateRequest):
    """Ollama's completion of a prompt (through the chat template unless `raw`); with a `suffix`,
    the code between prompt and suffix, in the model's fill-in-the-middle tokens."""
    if body.suffix:
        if body.images:
            message = "suffix (fill-in-the-middle) takes text only; send the images without it"
            raise RequestError(400, message, "suffix", "invalid_value")
        return await respond(body, None, body.prompt or "")
    if not body.prompt and not body.images:
        return await respond(body, None)
    if body.raw:
        return await respond(body, None, body.prompt)
    turns = [neutral.Turn("system", [neutral.TextPart(body.system)])] if body.system else []
    parts = [neutral.TextPart(body.prompt or ""), *map(image_part, body.images or [])]
    return await respond(body, [*turns, neutral.Turn("user", parts)])


async def respond(
    body: ChatRequest | GenerateRequest,
    conversation: list[neutral.Turn] | None,
    prompt: str | None = None,
):
    started = time.monotonic()
    state = server_state()
    model_id = await resolve_name(state.registry, body.model)
    keep = body.keep_seconds
    if conversation is None and prompt is None:
        return jsonify(await _load_or_unload(body, model_id, started))
    load_seconds = await load_for(state.registry, model_id, body.settings.num_ctx, keep)
    reply = Reply(isinstance(body, ChatRequest), body.model, started, load_seconds)
    prepared = await prepare(
        state.registry, to_request(body, model_id, conversation, prompt), state.limits
    )
    if body.stream:
        events = reply.stream(generate(prepared))
        kept = _then_keep_alive(events, state.registry, model_id, keep)
        return await ndjson_response(kept)
    completion = await complete(prepared)
    await apply_keep_alive(state.registry, model_id, keep)
    return jsonify(reply.whole(completion))


async def _load_or_unload(body: ChatRequest | GenerateRequest, model_id: str, started: float):
    """Ollama's way to load a model ahead of use, or with keep_alive 0 to unload it."""
    registry, keep = server_state().registry, body.keep_seconds
    load_seconds = 0.0 if keep == 0 else await load_for(registry, model_id, None, keep)
    reply = Reply(isinstance(body, ChatRequest), body.model, started, load_seconds)
    unloaded = await apply_keep_alive(registry, model_id, keep)
    return reply.lifecycle("unload" if unloaded else "load")


def to_request(
    body: ChatRequest | GenerateRequest,
    model_id: str,
    conversation: list[neutral.Turn] | None,
    prompt: str | None,
) -> neutral.GenerateRequest:
    settings = body.settings
    constraints = (
        body.constraints()
        if isinstance(body, ChatRequest)
        else neutral.Constraints(json_schema=body.json_schema(), schema_param="format")
    )
    return neutral.GenerateRequest(
        model=model_id,
        sampling=settings.to_sampling_params(),
        conversation=conversation,
        prompt=prompt,
        fill_in=_fill_in(body, prompt),
        max_tokens=settings.token_limit,
        clamp_max_tokens=True,  # Ollama cuts num_predict to the context rather than refuse it
        stop=settings.stop or [],
        constraints=constraints,
        reasoning_effort=body.reasoning_effort,
        prompt_param="messages" if isinstance(body, ChatRequest) else "prompt",
        response_id=new_id("ollama"),
        endpoint=request.path,
    )


def _fill_in(
    body: ChatRequest | GenerateRequest, prompt: str | None
) -> neutral.FillInMiddle | None:
    if isinstance(body, GenerateRequest) and body.suffix and prompt is not None:
        return neutral.FillInMiddle(prefix=prompt, suffix=body.suffix)
    return None


def to_turn(message: ChatMessage) -> neutral.Turn:
    parts: list[neutral.Part] = []
    if message.thinking and message.role == "assistant":
        parts.append(neutral.ReasoningPart(message.thinking))
    if message.role == "tool":
        # Ollama's results name their tool, not a call id: the name stands for both.
        parts.append(neutral.ToolResultPart(message.tool_name or "", message.content or ""))
    elif message.content:
        parts.append(neutral.TextPart(message.content))
    parts += [image_part(image) for image in message.images or []]
    for call in message.tool_calls or []:
        name, arguments = call.function.name, json.dumps(call.function.arguments)
        parts.append(neutral.ToolCallPart(name, name, arguments))
    return neutral.Turn(message.role, parts, message.tool_name if message.role == "tool" else None)


def image_part(data: str) -> neutral.ImagePart:
    """Ollama sends an image's bytes in base64, with no data: URL around them."""
    return neutral.ImagePart(data if data.startswith("data:") else f"data:image;base64,{data}")


async def _then_keep_alive(
    events: AsyncIterator[dict], registry: ModelRegistry, model_id: str, seconds: float | None
) -> AsyncIterator[dict]:
    """The stream's chunks, then (however it ends) the model kept or unloaded as asked. The
    registry is passed in: a stream runs on after the request's app context has gone."""
    try:
        async with aclosing(events):
            async for chunk in events:
                yield chunk
    finally:
        await apply_keep_alive(registry, model_id, seconds)
