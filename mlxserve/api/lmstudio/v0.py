"""The native REST API (/api/v0, LM Studio's shape): every stored model with its load state,
generation with stats, model info and runtime, explicit load/unload, the request log and the
server's options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from quart import Blueprint, make_response

from mlxserve import logstream
from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.http.sse import encode
from mlxserve.api.lmstudio.answers import (
    V0LoadedList,
    V0LoadResult,
    V0Model,
    V0ModelList,
    V0ServerOptions,
    V0UnloadResult,
)
from mlxserve.api.lmstudio.load import LoadOptions, load_instance
from mlxserve.api.lmstudio.v0_format import (
    find_v0_model,
    load_result,
    native_extras,
    v0_instance,
    v0_models,
)
from mlxserve.api.openai import chat as openai_chat
from mlxserve.api.openai import completions as openai_completions
from mlxserve.api.openai.objects import ChatCompletion, TextCompletion
from mlxserve.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.api.state import server_state
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.prepare import model_family

blueprint = Blueprint("native", __name__, url_prefix="/api/v0")
HEARTBEAT_SECONDS = 15.0  # a comment line now and then lets proxies and clients see a live feed


class LoadRequest(LoadOptions):
    model: str | None = None
    id: str | None = None  # accepted as a synonym of model


class UnloadRequest(OpenAIModel):
    model: str | None = None
    identifier: str | None = None


def _required_model(*candidates: str | None) -> str:
    name = next((c for c in candidates if c), None)
    if name is None:
        raise RequestError(400, "model: Field required", "model", "missing_required_parameter")
    return name


@blueprint.get("/models")
@answers(V0ModelList)
async def list_models():
    """Every servable model, loaded or not; the loaded ones with their tool-call family."""
    registry = server_state().registry
    await _find_families(registry)
    return V0ModelList(object="list", data=await v0_models(registry)).as_dict()


@blueprint.get("/models/<path:model_id>")
@answers(V0Model)
async def get_model(model_id: str):
    """One model, loaded or not; a loaded one with the tool-call family found for it."""
    registry = server_state().registry
    await _find_families(registry)
    entry = await find_v0_model(registry, model_id)
    if entry is None:
        raise RequestError(404, f"model '{model_id}' not found", "model", "model_not_found")
    return entry.as_dict()


async def _find_families(registry) -> None:
    """Each loaded model's tool-call family, told once (from its template and vocabulary)."""
    for loaded in list(registry.loaded.values()):
        await model_family(loaded)


@blueprint.get("/loaded")
@answers(V0LoadedList)
async def list_loaded():
    """mlxserve's own: loaded instances with engine, memory estimate and idle time."""
    registry = server_state().registry
    data = [v0_instance(loaded) for loaded in registry.loaded.values()]
    return V0LoadedList(object="list", data=data, loading=registry.loading).as_dict()


@blueprint.post("/models/load")
@answers(V0LoadResult)
@with_body(LoadRequest)
async def load_model(body: LoadRequest):
    model_id = _required_model(body.model, body.id)
    outcome = await load_instance(server_state().registry, model_id, body)
    return load_result(outcome.loaded, outcome.seconds, outcome.already_loaded).as_dict()


@blueprint.post("/models/unload")
@answers(V0UnloadResult)
@with_body(UnloadRequest)
async def unload_model(body: UnloadRequest):
    identifier = _required_model(body.identifier, body.model)
    await server_state().registry.unload(identifier)
    return V0UnloadResult(identifier=identifier, state="not-loaded").as_dict()


@blueprint.post("/chat/completions")
@answers(ChatCompletion)
@with_body(ChatCompletionRequest)
async def chat_completions(body: ChatCompletionRequest):
    """OpenAI's chat completion, plus stats, model_info and runtime once it has ended."""
    return await openai_chat.respond(body, native_extras)


@blueprint.post("/completions")
@answers(TextCompletion)
@with_body(CompletionRequest)
async def completions(body: CompletionRequest):
    """OpenAI's text completion, plus stats, model_info and runtime once it has ended."""
    return await openai_completions.respond(body, native_extras)


@blueprint.get("/server")
@answers(V0ServerOptions)
async def server_options():
    """mlxserve's own: the options this server was started with; the API key only as set."""
    return V0ServerOptions(options=server_state().options).as_dict()


@blueprint.get("/log/stream")
async def log_stream():
    """Server-sent events: one JSON record per generation start (`request`) and end
    (`response`), published by the pipeline as it generates."""

    async def events() -> AsyncIterator[bytes]:
        with logstream.bus.subscribe() as subscription:
            yield b": subscribed\n\n"
            while True:
                try:  # asyncio.timeout: Python 3.11's wait_for may lose a disconnect
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        record = await subscription.next_record()
                except TimeoutError:
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
