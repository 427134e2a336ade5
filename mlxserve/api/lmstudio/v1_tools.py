"""/api/v1/chat `integrations`, as LM Studio 0.4 takes them: "mcp/<name>" or
{"type": "plugin", "id", "allowed_tools"} for a server of the mcp.json file (--mcp-config), and
{"type": "ephemeral_mcp", "server_label", "server_url", "allowed_tools", "headers"} for one the
request names (--allow-request-mcp). Their tools are offered to the model, and the server runs
its calls (mcp/loop.py).

LM Studio's API has no step where the client approves a call: the operator's permission to use
plugins is the approval. So a `require_approval` asking for one is refused, not ignored."""

from __future__ import annotations

from mlxserve.mcp.pool import McpServers
from mlxserve.mcp.specs import ServerChoice, named_server, tool_names
from mlxserve.mcp.tools import McpToolbox
from mlxserve.pipeline.errors import RequestError

KINDS = ("plugin", "ephemeral_mcp")


async def open_integrations(servers: McpServers, integrations: list) -> McpToolbox:
    """The integrations checked, their servers connected and their tools listed (403 when they
    are off or on an address requests may not reach, 400 for both kinds at once, 424 naming one
    that cannot be reached). The caller closes the toolbox."""
    choices = [_choice(entry, f"integrations[{index}]") for index, entry in enumerate(integrations)]
    return await McpToolbox.open(servers, choices)


def _choice(entry, param: str) -> ServerChoice:
    if isinstance(entry, str):
        entry = {"type": "plugin", "id": entry}
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in KINDS:
        message = (
            f'{param}: a plugin id ("mcp/<name>"), {{"type": "plugin", "id"}} or '
            '{"type": "ephemeral_mcp", "server_label", "server_url"}'
        )
        raise RequestError(400, message, param, "invalid_integration")
    _no_approval(entry.get("require_approval"), param)
    allowed = tool_names(entry.get("allowed_tools"), f"{param}.allowed_tools")
    if kind == "plugin":
        plugin_id = entry.get("id")
        if not isinstance(plugin_id, str) or not plugin_id:
            message = f"{param}.id: required, a string"
            raise RequestError(400, message, f"{param}.id", "missing_required_parameter")
        provider = {"type": "plugin", "plugin_id": plugin_id}
        return ServerChoice(param, plugin_id=plugin_id, allowed=allowed, provider=provider)
    spec = named_server(entry, param)
    provider = {"type": "ephemeral_mcp", "server_label": spec.label}
    return ServerChoice(param, spec=spec, allowed=allowed, provider=provider)


def _no_approval(value, param: str) -> None:
    """Calls run as they are made here, so a request that wants to approve them is told where
    it can, rather than having them run unasked."""
    if value in (None, "never"):
        return
    where = f"{param}.require_approval"
    message = (
        f"{where}: /api/v1/chat runs the calls an integration's tools get without asking, as "
        "LM Studio does; leave tools out with allowed_tools, or use /v1/responses, whose mcp "
        "tools can require approval"
    )
    raise RequestError(400, message, where, "approval_not_supported")
