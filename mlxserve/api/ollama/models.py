"""Ollama's model management: /api/tags (every servable model), /api/show, /api/ps (loaded
models), /api/delete and /api/copy on the store, /api/version and the root's liveness line.
/api/create and /api/push are refused: models come from conversion, `mlxserve get` or
/api/pull."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.ollama import describe
from mlxserve.api.ollama.answers import ModelDescription, Running, Tags, Version
from mlxserve.api.ollama.names import not_found, resolve_name, store_id
from mlxserve.api.ollama.protocol import CopyRequest, ModelRequest
from mlxserve.api.state import server_state
from mlxserve.models.store import copy_model, delete_model
from mlxserve.pipeline.errors import RequestError

blueprint = Blueprint("ollama_models", __name__)
# The Ollama release whose API this follows; clients turn features on by it.
OLLAMA_VERSION = "0.12.0"


@blueprint.get("/")
async def root():
    """Ollama's liveness answer."""
    return Response("Ollama is running", content_type="text/plain")


root.response_media_type = "text/plain"


@blueprint.get("/api/version")
@answers(Version)
async def version():
    """The Ollama API version this server follows."""
    return Version(version=OLLAMA_VERSION).as_dict()


@blueprint.get("/api/tags")
@answers(Tags)
async def tags():
    """Every servable model, by its Ollama name."""
    registry = server_state().registry
    records = await asyncio.to_thread(registry.servable)
    models = await asyncio.to_thread(lambda: [describe.tags_entry(r) for r in records])
    return Tags(models=models).as_dict()


@blueprint.post("/api/show")
@answers(ModelDescription)
@with_body(ModelRequest)
async def show(body: ModelRequest):
    """A model's details, chat template, model_info and capabilities."""
    record = await _record(body.model_name)
    return (await asyncio.to_thread(describe.description, record)).as_dict()


@blueprint.get("/api/ps")
@answers(Running)
async def running():
    """The loaded models, with their memory, context and when they expire."""
    loaded = list(server_state().registry.loaded.values())
    found = await asyncio.to_thread(lambda: [describe.details(m.record) for m in loaded])
    models = [describe.running_entry(m, d) for m, d in zip(loaded, found, strict=True)]
    return Running(models=models).as_dict()


@blueprint.delete("/api/delete")
@with_body(ModelRequest)
async def delete(body: ModelRequest):
    """Remove a model from the store (unloading it first); 404 when there is none."""
    registry = server_state().registry
    record = await _record(body.model_name)
    if record.origin != "store":
        message = f"model '{body.model_name}' was found in {record.directory}, not in the store; "
        raise RequestError(400, message + "delete it there", "model", "not_in_store")
    for identifier, loaded in list(registry.loaded.items()):
        if loaded.record.id == record.id:
            await registry.unload(identifier)
    if not await asyncio.to_thread(delete_model, registry.models_dir, record.id):
        raise not_found(body.model_name)
    return Response("", content_type="text/plain")


delete.response_media_type = "text/plain"


@blueprint.post("/api/copy")
@with_body(CopyRequest)
async def copy(body: CopyRequest):
    """The source model under a second name (its files linked, not duplicated, where possible)."""
    registry = server_state().registry
    record = await _record(body.source)
    try:
        destination = store_id(body.destination)
        await asyncio.to_thread(copy_model, registry.models_dir, record, destination)
    except (ValueError, FileExistsError) as exc:
        raise RequestError(400, f"destination: {exc}", "destination", "invalid_value") from exc
    return Response("", content_type="text/plain")


copy.response_media_type = "text/plain"


@blueprint.post("/api/create")
@blueprint.post("/api/push")
async def refused():
    """Refused: models come from conversion, `mlxserve get` or /api/pull, not Modelfiles."""
    message = (
        "creating and pushing models is not supported by this server; convert or download a "
        "model instead (`mlxserve convert`, `mlxserve get`, POST /api/pull)"
    )
    raise RequestError(400, message, None, "not_supported")


async def _record(name: str):
    registry = server_state().registry
    model_id = await resolve_name(registry, name)
    if model_id in registry.loaded:
        return registry.loaded[model_id].record
    record = await registry.find(model_id)
    if record is None:
        raise not_found(name)
    return record
