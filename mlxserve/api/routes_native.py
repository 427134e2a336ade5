"""The native REST API (/api/v0, LM Studio's shape): every stored model with its load state,
generation with stats, model info and runtime, explicit load/unload, and the request log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from pydantic import Field
from quart import Blueprint, current_app, jsonify, make_response

from mlxserve.api import logstream, serving
from mlxserve.api.errors import APIError
from mlxserve.api.native_format import (
    find_entry,
    instance_entry,
    load_result,
    model_entries,
    native_extras,
)
from mlxserve.api.parsing import parse_body
from mlxserve.api.protocol import ChatCompletionRequest, CompletionRequest, OpenAIModel
from mlxserve.api.routes_openai import respond
from mlxserve.api.sse import encode

blueprint = Blueprint("native", __name__, url_prefix="/api/v0")
HEARTBEAT_SECONDS = 15.0  # a comment line now and then lets proxies and clients see a live feed


class LoadRequest(OpenAIModel):
    model: str | None = None
    id: str | None = None  # accepted as a synonym of model
    context_length: int | None = Field(None, ge=1)
    ttl: float | None = Field(None, gt=0)
    identifier: str | None = Field(None, min_length=1)


class UnloadRequest(OpenAIModel):
    model: str | None = None
    identifier: str | None = None


def _required_model(*candidates: str | None) -> str:
    name = next((c for c in candidates if c), None)
    if name is None:
        raise APIError(400, "model: Field required", "model", "missing_required_parameter")
    return name


@blueprint.get("/models")
async def list_models():
    return jsonify({"object": "list", "data": model_entries(current_app.registry)})


@blueprint.get("/models/<path:model_id>")
async def get_model(model_id: str):
    entry = find_entry(current_app.registry, model_id)
    if entry is None:
        raise APIError(404, f"model '{model_id}' not found", "model", "model_not_found")
    return jsonify(entry)


@blueprint.get("/loaded")
async def list_loaded():
    """mlxserve's own: loaded instances with engine, memory estimate and idle time."""
    registry = current_app.registry
    data = [instance_entry(loaded) for loaded in registry.loaded.values()]
    return jsonify({"object": "list", "data": data, "loading": registry.loading})


@blueprint.post("/models/load")
async def load_model():
    body = await parse_body(LoadRequest)
    registry = current_app.registry
    model_id = _required_model(body.model, body.id)
    identifier = body.identifier or model_id
    already_loaded = identifier in registry.loaded
    started = time.monotonic()
    loaded = await registry.load(
        model_id, context_length=body.context_length, ttl=body.ttl, identifier=identifier
    )
    return jsonify(load_result(loaded, time.monotonic() - started, already_loaded))


@blueprint.post("/models/unload")
async def unload_model():
    body = await parse_body(UnloadRequest)
    identifier = _required_model(body.identifier, body.model)
    await current_app.registry.unload(identifier)
    return jsonify({"identifier": identifier, "state": "not-loaded"})


@blueprint.post("/chat/completions")
async def chat_completions():
    body = await parse_body(ChatCompletionRequest)
    prepared = await serving.prepare_chat(current_app.registry, body)
    return await respond(prepared, body.stream, body.include_usage, _native_extras(prepared))


@blueprint.post("/completions")
async def completions():
    body = await parse_body(CompletionRequest)
    prepared = await serving.prepare_completion(current_app.registry, body)
    return await respond(prepared, body.stream, body.include_usage, _native_extras(prepared))


def _native_extras(prepared: serving.PreparedGeneration):
    return lambda stats: native_extras(prepared.loaded, stats)


@blueprint.get("/log/stream")
async def log_stream():
    """Server-sent events: one JSON record per generation start (`request`) and end
    (`response`), published by serving.generate()."""

    async def events() -> AsyncIterator[bytes]:
        with logstream.bus.subscribe() as subscription:
            yield b": subscribed\n\n"
            while True:
                try:
                    record = await asyncio.wait_for(subscription.next_record(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if record is None:
                    return  # the server is shutting down
                yield encode(record)

    response = await make_response(
        events(), {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    response.timeout = None  # the feed stays open until the client leaves
    return response
