"""The server's state, made once by the app factory and read by routes through `server_state()`:
the model registry and download jobs, the limits every request obeys, the options it was
started with, the MCP servers, the stored conversations of the stateful APIs, and the
background tasks that live as long as the server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, current_app

from mlxserve.api.http.loop_stalls import LoopStallMonitor
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.mcp.pool import McpServers
from mlxserve.models.download_jobs import Downloads
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.prepare import ServerLimits

EXTENSION = "mlxserve"  # the key of the state in the app's `extensions`


@dataclass
class ServerState:
    registry: ModelRegistry
    limits: ServerLimits
    mcp_servers: McpServers
    options: dict[str, Any] = field(default_factory=dict)  # `serve`'s, for /api/v0/server
    downloads: Downloads = field(default_factory=Downloads)
    loop_monitor: LoopStallMonitor = field(default_factory=LoopStallMonitor)
    response_store: ConversationStore = field(default_factory=ConversationStore)  # /v1/responses
    lmstudio_chats: ConversationStore = field(default_factory=ConversationStore)  # /api/v1/chat
    preload_task: asyncio.Task | None = None  # loads the models named at start
    loop_monitor_task: asyncio.Task | None = None

    def attach(self, app: Quart) -> None:
        app.extensions[EXTENSION] = self


def server_state(app: Quart | None = None) -> ServerState:
    """The state of `app`, by default the one serving the current request."""
    return (app or current_app).extensions[EXTENSION]
