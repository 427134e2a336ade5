"""The OpenAI-compatible endpoints: thin routes that parse, call serving, and format."""

from __future__ import annotations

from collections.abc import Callable

from quart import Blueprint, current_app, jsonify

from mlxserve.api import serving
from mlxserve.api.parsing import parse_body
from mlxserve.api.protocol import ChatCompletionRequest, CompletionRequest
from mlxserve.api.sse import sse_response
from mlxserve.api.tool_calls import buffered_tool_chunks, chat_tool_calls
from mlxserve.api.tool_parsers import parse_tool_calls
from mlxserve.engine.base import GenerationStats

blueprint = Blueprint("openai", __name__, url_prefix="/v1")


@blueprint.get("/models")
async def list_models():
    loaded = current_app.registry.loaded.values()
    data = [
        {
            "id": m.identifier,
            "object": "model",
            "created": int(m.loaded_at),
            "owned_by": m.record.id.split("/")[0],
        }
        for m in loaded
    ]
    return jsonify({"object": "list", "data": data})


@blueprint.post("/chat/completions")
async def chat_completions():
    body = await parse_body(ChatCompletionRequest)
    prepared = await serving.prepare_chat(current_app.registry, body)
    return await respond(prepared, body.stream, body.include_usage)


@blueprint.post("/completions")
async def completions():
    body = await parse_body(CompletionRequest)
    prepared = await serving.prepare_completion(current_app.registry, body)
    return await respond(prepared, body.stream, body.include_usage)


async def respond(
    prepared: serving.PreparedGeneration,
    stream: bool,
    include_usage: bool,
    extras: Callable[[GenerationStats], dict] | None = None,
):
    """The response for a prepared generation; `extras` adds fields (such as /api/v0's stats)
    to the full body, or to the chunks sent once generation has ended."""
    family = prepared.tool_family
    if stream:
        if family:
            events = serving.generate(prepared)
            chunks = buffered_tool_chunks(prepared.shape, events, family, include_usage)
        else:
            chunks = serving.stream_chunks(prepared, include_usage)
        return await sse_response(_with_extras(chunks, prepared, extras) if extras else chunks)
    text, stats = await serving.run_to_end(prepared)
    content, calls = parse_tool_calls(text, family) if family else (text, [])
    if calls:
        body = prepared.shape.full(content, stats, chat_tool_calls(calls))
    else:
        body = prepared.shape.full(text, stats)
    return jsonify({**body, **(extras(stats) if extras else {})})


async def _with_extras(chunks, prepared: serving.PreparedGeneration, extras):
    async for chunk in chunks:
        if isinstance(chunk, dict) and prepared.stats is not None:
            choices = chunk.get("choices")
            if not choices or choices[0].get("finish_reason") is not None:
                chunk = {**chunk, **extras(prepared.stats)}
        yield chunk
