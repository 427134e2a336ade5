"""The Quart application factory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart import Quart

from mlxserve.api.anthropic import messages as anthropic_messages
from mlxserve.api.http import metrics
from mlxserve.api.http.errors import register_error_handlers
from mlxserve.api.http.guard import GuardOptions, has_key, install_guard
from mlxserve.api.http.openapi import openapi_document
from mlxserve.api.http.parsing import answers
from mlxserve.api.llamacpp import infill as llamacpp_infill
from mlxserve.api.lmstudio import v0 as lmstudio_v0
from mlxserve.api.lmstudio import v1 as lmstudio_v1
from mlxserve.api.lmstudio import v1_downloads as lmstudio_v1_downloads
from mlxserve.api.ollama import embed as ollama_embed
from mlxserve.api.ollama import generation as ollama_generation
from mlxserve.api.ollama import models as ollama_models
from mlxserve.api.ollama import pull as ollama_pull
from mlxserve.api.openai import audio as openai_audio
from mlxserve.api.openai import chat as openai_chat
from mlxserve.api.openai import completions as openai_completions
from mlxserve.api.openai import embeddings
from mlxserve.api.openai import models as openai_models
from mlxserve.api.openai import rerank as openai_rerank
from mlxserve.api.openai.objects import Health
from mlxserve.api.responses import route as openai_responses
from mlxserve.api.state import ServerState
from mlxserve.api.ui import page as ui_page
from mlxserve.mcp.pool import McpServers, McpSettings
from mlxserve.models.options import RegistryOptions
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.prepare import ServerLimits

log = logging.getLogger(__name__)


@dataclass
class AppConfig:
    models_dir: Path
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    preload: list[str] = field(default_factory=list)  # model ids loaded before serving starts
    guard: GuardOptions = field(default_factory=GuardOptions)
    max_body_bytes: int = 64 * 1024**2  # larger request bodies are a 413
    limits: ServerLimits = field(default_factory=ServerLimits)
    mcp: McpSettings = field(default_factory=McpSettings)  # which MCP servers requests may use
    ui: bool = True  # the web page at / for browsers (`serve --no-ui` turns it off)
    options: dict[str, Any] = field(default_factory=dict)  # serve's, as /api/v0/server shows them


def create_app(config: AppConfig) -> Quart:
    app = Quart("mlxserve")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    state = ServerState(
        registry=ModelRegistry(config.models_dir, config.registry),
        limits=config.limits,
        mcp_servers=McpServers(config.mcp),
        options=config.options,
    )
    state.attach(app)
    adapters = (openai_models, openai_chat, openai_completions, openai_responses, lmstudio_v0)
    natives = (lmstudio_v1, lmstudio_v1_downloads, llamacpp_infill)
    ollama = (ollama_generation, ollama_embed, ollama_models, ollama_pull)
    endpoints = (anthropic_messages, embeddings, openai_rerank, openai_audio, metrics)
    for adapter in (*adapters, *natives, *ollama, *endpoints):
        app.register_blueprint(adapter.blueprint)
    register_error_handlers(app)
    if config.ui:
        install_guard(app, config.guard, keyless=ui_page.is_page_request)
        ui_page.install_page(app)
    else:
        install_guard(app, config.guard)

    @app.get("/openapi.json")
    async def openapi():
        """This document."""
        return openapi_document(app)

    @app.get("/health")
    @answers(Health)
    async def health():
        """Liveness; with the API key (or none set), the loaded models too."""
        if config.guard.api_key and not has_key(config.guard.api_key):
            return Health(status="ok").as_dict()  # liveness only: no model details without the key
        loaded = state.registry.loaded
        active = sum(model.active_requests for model in loaded.values())
        # A model split across the ranks of `serve --distributed` says how.
        splits = (getattr(model.engine, "distributed", None) for model in loaded.values())
        split = next(filter(None, splits), None)
        details = {"distributed": split} if split else {}
        health = Health(status="ok", loaded=sorted(loaded), active_requests=active, **details)
        return health.as_dict()

    @app.before_serving
    async def start_loading():
        # Serve at once; requests that arrive while the model loads get a 503, not a refused socket.
        state.preload_task = asyncio.ensure_future(_preload(state.registry, config.preload))
        state.loop_monitor_task = asyncio.ensure_future(state.loop_monitor.run())

    @app.after_serving
    async def unload_models():
        state.loop_monitor_task.cancel()
        state.downloads.close()
        await asyncio.wait([state.preload_task])  # a load in flight must finish before it is undone
        await state.registry.close()
        await state.mcp_servers.close()  # stdio MCP servers stop with this server

    return app


async def _preload(registry: ModelRegistry, model_ids: list[str]) -> None:
    for model_id in model_ids:
        try:
            await registry.load(model_id)
        except Exception:  # noqa: BLE001 - the server stays up to report it and serve others
            log.exception("could not load %s", model_id)
