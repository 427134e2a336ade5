"""The MCP servers one request asks for, read from its API family's fields in one place: a server
it names by URL (/v1/responses `mcp` tools, /api/v1/chat `ephemeral_mcp` integrations) or an
mcp.json plugin (/api/v1/chat), each with the tools it may offer and which calls need approval.
McpServers.check (pool.py) decides whether the request may use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mlxserve.mcp.servers import ServerSpec
from mlxserve.pipeline.errors import RequestError

if TYPE_CHECKING:
    from mcp.types import Tool

ToolTest = Callable[["Tool"], bool]


@dataclass(frozen=True)
class ServerChoice:
    """One server a request asks for: by URL (`spec`) or an mcp.json plugin (`plugin_id`)."""

    param: str  # the request's field that names it, for errors
    spec: ServerSpec | None = None
    plugin_id: str | None = None
    allowed: ToolTest | None = None  # the tools offered; None: all
    approval: ToolTest | None = None  # the calls that need the client's approval; None: none
    provider: dict = field(default_factory=dict)  # how LM Studio names the integration

    @property
    def named_by_url(self) -> bool:
        return self.spec is not None


def named_server(definition: dict, param: str, *, bearer_token: bool = False) -> ServerSpec:
    """A server a request names: `server_label`, the http(s) `server_url` of a streamable HTTP
    server, `headers` (strings), and with `bearer_token` OpenAI's `authorization` field."""
    label = definition.get("server_label")
    if not isinstance(label, str) or not label:
        message = f"{param}.server_label: required, a string naming the server"
        raise RequestError(400, message, f"{param}.server_label", "missing_required_parameter")
    url = definition.get("server_url")
    if not _is_http_url(url):
        message = f"{param}.server_url: required, the http(s) URL of a streamable HTTP MCP server"
        raise RequestError(400, message, f"{param}.server_url", "invalid_value")
    headers = definition.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        message = f"{param}.headers: must be an object of strings"
        raise RequestError(400, message, f"{param}.headers", "invalid_type")
    token = definition.get("authorization") if bearer_token else None
    if isinstance(token, str) and token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    return ServerSpec(label, url=url, headers=headers)


def tool_names(value, param: str) -> ToolTest | None:
    """`allowed_tools` as a list of names (None: every tool)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise RequestError(400, f"{param}: a list of tool names", param, "invalid_type")
    return lambda tool: tool.name in value


def _is_http_url(url) -> bool:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return bool(parts.hostname)
