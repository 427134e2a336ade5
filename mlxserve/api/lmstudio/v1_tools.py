"""/api/v1/chat `integrations`, as LM Studio 0.4 takes them: "mcp/<name>" or
{"type": "plugin", "id", "allowed_tools"} for a server of the mcp.json file (--mcp-config), and
{"type": "ephemeral_mcp", "server_label", "server_url", "allowed_tools", "headers"} for one the
request names (--allow-request-mcp). Their tools are offered to the model, and the server runs
its calls (mcp/loop.py)."""

from __future__ import annotations

from mlxserve.mcp.pool import McpServers
from mlxserve.mcp.servers import ServerSpec
from mlxserve.mcp.tools import McpToolbox, ToolTest
from mlxserve.pipeline.errors import RequestError

KINDS = ("plugin", "ephemeral_mcp")


async def open_integrations(servers: McpServers, integrations: list) -> McpToolbox:
    """The integrations' servers connected and their tools listed (403 when they are off, 424
    naming one that cannot be reached). The caller closes the toolbox."""
    toolbox = McpToolbox(servers)
    try:
        for index, entry in enumerate(integrations):
            await _add(toolbox, entry, f"integrations[{index}]")
    except BaseException:
        await toolbox.close()
        raise
    return toolbox


async def _add(toolbox: McpToolbox, entry, param: str) -> None:
    if isinstance(entry, str):
        entry = {"type": "plugin", "id": entry}
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in KINDS:
        message = (
            f'{param}: a plugin id ("mcp/<name>"), {{"type": "plugin", "id"}} or '
            '{"type": "ephemeral_mcp", "server_label", "server_url"}'
        )
        raise RequestError(400, message, param, "invalid_integration")
    allowed = _allowed(entry.get("allowed_tools"), f"{param}.allowed_tools")
    if kind == "plugin":
        plugin_id = _text(entry, "id", param)
        provider = {"type": "plugin", "plugin_id": plugin_id}
        await toolbox.add_plugin(plugin_id, param, allowed=allowed, provider=provider)
        return
    label, url = _text(entry, "server_label", param), _text(entry, "server_url", param)
    if not url.startswith(("http://", "https://")):
        message = f"{param}.server_url: an http(s) URL of a streamable HTTP MCP server"
        raise RequestError(400, message, f"{param}.server_url", "invalid_value")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        message = f"{param}.headers: must be an object of strings"
        raise RequestError(400, message, f"{param}.headers", "invalid_type")
    spec = ServerSpec(label, url=url, headers=headers)
    provider = {"type": "ephemeral_mcp", "server_label": label}
    await toolbox.add_request_server(spec, param, allowed=allowed, provider=provider)


def _text(entry: dict, key: str, param: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        message = f"{param}.{key}: required, a string"
        raise RequestError(400, message, f"{param}.{key}", "missing_required_parameter")
    return value


def _allowed(names, param: str) -> ToolTest | None:
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RequestError(400, f"{param}: a list of tool names", param, "invalid_type")
    return lambda tool: tool.name in names
