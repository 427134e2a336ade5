"""The Quart application factory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from quart import Quart, Response, request

from mlxserve.api import (
    embeddings,
    lmstudio_v0,
    openai_chat,
    openai_completions,
    openai_models,
    openai_responses,
)
from mlxserve.api.errors import error_response, register_error_handlers
from mlxserve.models.registry import ModelRegistry, RegistryOptions
from mlxserve.pipeline.errors import RequestError

log = logging.getLogger(__name__)


@dataclass
class AppConfig:
    models_dir: Path
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    preload: list[str] = field(default_factory=list)  # model ids loaded before serving starts
    api_key: str | None = None
    cors: bool = False


def create_app(config: AppConfig) -> Quart:
    app = Quart("mlxserve")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    app.registry = ModelRegistry(config.models_dir, config.registry)
    adapters = (openai_models, openai_chat, openai_completions, openai_responses, lmstudio_v0)
    for adapter in (*adapters, embeddings):
        app.register_blueprint(adapter.blueprint)
    register_error_handlers(app)
    _add_auth(app, config.api_key)
    if config.cors:
        _add_cors(app)

    @app.get("/health")
    async def health():
        loaded = app.registry.loaded
        active = sum(model.active_requests for model in loaded.values())
        return {"status": "ok", "loaded": sorted(loaded), "active_requests": active}

    @app.before_serving
    async def start_loading():
        # Serve at once; requests that arrive while the model loads get a 503, not a refused socket.
        app.preload_task = asyncio.ensure_future(_preload(app, config.preload))

    @app.after_serving
    async def unload_models():
        await asyncio.wait([app.preload_task])  # a load in flight must finish before it is undone
        await app.registry.close()

    return app


async def _preload(app: Quart, model_ids: list[str]) -> None:
    for model_id in model_ids:
        try:
            await app.registry.load(model_id)
        except Exception:  # noqa: BLE001 - the server stays up to report it and serve others
            log.exception("could not load %s", model_id)


def _add_auth(app: Quart, api_key: str | None) -> None:
    if not api_key:
        return  # clients send a placeholder key; it is read and ignored

    @app.before_request
    async def check_key():
        if request.method == "OPTIONS":
            return None
        if request.headers.get("Authorization", "") != f"Bearer {api_key}":
            return error_response(
                RequestError(401, "invalid or missing API key", None, "invalid_api_key")
            )
        return None


def _add_cors(app: Quart) -> None:
    @app.before_request
    async def preflight():
        if request.method == "OPTIONS":
            return Response("", status=204)
        return None

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Headers"] = "*"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        return response
