"""The OpenAI-compatible endpoints: thin routes that parse, call serving, and format."""

from __future__ import annotations

from quart import Blueprint, current_app, jsonify

from mlxserve.api import serving
from mlxserve.api.parsing import parse_body
from mlxserve.api.protocol import ChatCompletionRequest, CompletionRequest
from mlxserve.api.sse import sse_response

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
    if stream:
        return await sse_response(serving.stream_chunks(prepared, include_usage))
    text, stats = await serving.run_to_end(prepared)
    return jsonify(prepared.shape.full(text, stats))
