"""The OpenAI-compatible endpoints: thin routes that parse, call serving, and format."""

from __future__ import annotations

from quart import Blueprint, current_app, jsonify

from mlxserve.api import serving
from mlxserve.api.parsing import parse_body
from mlxserve.api.protocol import ChatCompletionRequest, CompletionRequest
from mlxserve.api.sse import sse_response
from mlxserve.api.tool_calls import buffered_tool_chunks, chat_tool_calls
from mlxserve.api.tool_parsers import parse_tool_calls

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
    return await _respond(prepared, body.stream, body.include_usage)


@blueprint.post("/completions")
async def completions():
    body = await parse_body(CompletionRequest)
    prepared = await serving.prepare_completion(current_app.registry, body)
    return await _respond(prepared, body.stream, body.include_usage)


async def _respond(prepared: serving.PreparedGeneration, stream: bool, include_usage: bool):
    family = prepared.tool_family
    if stream and family:
        events = serving.generate(prepared)
        chunks = buffered_tool_chunks(prepared.shape, events, family, include_usage)
        return await sse_response(chunks)
    if stream:
        return await sse_response(serving.stream_chunks(prepared, include_usage))
    text, stats = await serving.run_to_end(prepared)
    if family:
        content, calls = parse_tool_calls(text, family)
        if calls:
            return jsonify(prepared.shape.full(content, stats, chat_tool_calls(calls)))
    return jsonify(prepared.shape.full(text, stats))
