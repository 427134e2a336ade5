"""Remote MCP tools on /v1/responses (`{"type": "mcp", "server_label", "server_url", ...}`), as
OpenAI documents them: each server's tools are listed (an `mcp_list_tools` item) and offered to
the model; its calls run on the server (`mcp_call` items) unless they need the client's approval
(`mcp_approval_request`), which a later request gives with an `mcp_approval_response` item."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlxserve.api.responses.answers import (
    ResponseMcpApprovalRequestItem,
    ResponseMcpCallItem,
    ResponseMcpListToolsItem,
)
from mlxserve.api.responses.tools import ToolSet
from mlxserve.api.state import ServerState
from mlxserve.families.calls import ToolCall
from mlxserve.mcp.loop import ApprovedCall, ToolLoop, start_tool_loop
from mlxserve.mcp.pool import McpServers
from mlxserve.mcp.servers import CallOutcome
from mlxserve.mcp.specs import ServerChoice, ToolTest, named_server, tool_names
from mlxserve.mcp.tools import McpToolbox, read_only
from mlxserve.pipeline.deadline import deadline_from_now, until_deadline
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import GenerateRequest

if TYPE_CHECKING:
    from mcp.types import Tool


async def response_loop(
    state: ServerState,
    toolset: ToolSet,
    items: list,
    request_for: Callable[[McpToolbox | None], GenerateRequest],
    max_calls: int | None,
) -> ToolLoop:
    """A response's tool loop, started: its MCP servers connected and listed, the calls its
    input approves made, the first round prepared. Every refusal comes from here."""
    seconds = state.limits.request_timeout
    deadline, toolbox = deadline_from_now(seconds), None
    if toolset.mcp:
        async with until_deadline(deadline, seconds):
            toolbox = await open_toolbox(state.mcp_servers, toolset.mcp, list(toolset.tools))
    try:
        return await start_tool_loop(
            state.registry,
            state.limits,
            request_for(toolbox),
            toolbox,
            deadline=deadline,
            approved=approved_calls(items, toolbox, state.response_store.item),
            max_calls=max_calls,
        )
    except BaseException:
        if toolbox is not None:
            await toolbox.close()
        raise


async def open_toolbox(
    servers: McpServers, definitions: list[tuple[str, dict]], taken: list[str]
) -> McpToolbox:
    """The request's MCP servers checked, connected and their tools listed (403 when they are
    off or on an address requests may not reach, 424 naming one that cannot be reached). The
    caller closes the toolbox."""
    choices = [
        ServerChoice(
            param,
            spec=named_server(definition, param, bearer_token=True),
            allowed=_allowed(definition.get("allowed_tools"), f"{param}.allowed_tools"),
            approval=_approval(definition.get("require_approval"), param),
        )
        for param, definition in definitions
    ]
    return await McpToolbox.open(servers, choices, taken)


def _allowed(value, param: str) -> ToolTest | None:
    """`allowed_tools`: a list of names, or a filter ({"tool_names", "read_only"})."""
    if isinstance(value, dict):
        return _matcher(value, param)
    if value is None or isinstance(value, list):
        return tool_names(value, param)
    message = f"{param}: a list of tool names or a filter object"
    raise RequestError(400, message, param, "invalid_type")


def _approval(value, param: str) -> ToolTest:
    """`require_approval`: "always" (OpenAI's default), "never", or {"always": filter,
    "never": filter}; a tool neither filter matches needs approval."""
    where = f"{param}.require_approval"
    if value in (None, "always"):
        return lambda tool: True
    if value == "never":
        return lambda tool: False
    if not isinstance(value, dict):
        message = f'{where}: "always", "never" or {{"always": ..., "never": ...}}'
        raise RequestError(400, message, where, "invalid_value")
    always = _matcher(value.get("always") or {}, f"{where}.always")
    never = _matcher(value.get("never") or {}, f"{where}.never")
    return lambda tool: always(tool) or not never(tool)


def _matcher(value, param: str) -> ToolTest:
    """A filter object: tools named in `tool_names` and (with `read_only`) marked read-only or
    not; one with neither matches no tool."""
    if not isinstance(value, dict):
        message = f'{param}: a filter object ({{"tool_names", "read_only"}})'
        raise RequestError(400, message, param, "invalid_type")
    names, wants_read_only = value.get("tool_names"), value.get("read_only")
    if names is None and wants_read_only is None:
        return lambda tool: False
    if names is not None and not (isinstance(names, list) and all(map(_is_text, names))):
        message = f"{param}.tool_names: a list of tool names"
        raise RequestError(400, message, f"{param}.tool_names", "invalid_type")

    def matches(tool: Tool) -> bool:
        named = names is None or tool.name in names
        return named and (wants_read_only is None or read_only(tool) == bool(wants_read_only))

    return matches


def _is_text(value) -> bool:
    return isinstance(value, str)


def approved_calls(items: list, toolbox: McpToolbox | None, stored_item) -> list[ApprovedCall]:
    """The calls this request's `mcp_approval_response` items approve, unless the input already
    holds the call an approval led to (a client that sends the whole history each turn)."""
    items = [item for item in items if isinstance(item, dict)]
    made = {item.get("approval_request_id") for item in items if item.get("type") == "mcp_call"}
    approvals = []
    for index, item in enumerate(items):
        if item.get("type") != "mcp_approval_response" or not item.get("approve"):
            continue
        request_id = item.get("approval_request_id")
        if request_id in made:
            continue
        where = f"input[{index}].approval_request_id"
        asked = _approval_request(request_id, items, stored_item, where)
        tool = toolbox.get(asked.get("name")) if toolbox is not None else None
        if tool is None or tool.server_label != asked.get("server_label"):
            message = (
                f"{where}: the approved call is to tool '{asked.get('name')}' of MCP server "
                f"'{asked.get('server_label')}', which this request's tools do not offer"
            )
            raise RequestError(400, message, where, "invalid_value")
        call = ToolCall(tool.name, str(asked.get("arguments") or "{}"), f"mcp_{uuid.uuid4().hex}")
        approvals.append(ApprovedCall(call, tool, request_id))
    return approvals


def _approval_request(request_id, items: list[dict], stored_item, where: str) -> dict:
    for item in items:
        if item.get("type") == "mcp_approval_request" and item.get("id") == request_id:
            return item
    found = stored_item(request_id) if isinstance(request_id, str) else None
    if found is None or found.get("type") != "mcp_approval_request":
        message = f"{where}: no approval request with id {request_id!r}"
        raise RequestError(400, message, where, "item_not_found")
    return found


def listed_labels(items) -> set[str]:
    """Servers whose tools an mcp_list_tools item among `items` already shows."""
    if not isinstance(items, list):
        return set()
    return {
        item.get("server_label")
        for item in items
        if isinstance(item, dict) and item.get("type") == "mcp_list_tools"
    }


def list_tools_item(label: str, tools: list[dict]) -> ResponseMcpListToolsItem:
    return ResponseMcpListToolsItem(
        type="mcp_list_tools",
        id=f"mcpl_{uuid.uuid4().hex[:24]}",
        server_label=label,
        tools=tools,
        error=None,
    )


def mcp_call_item(
    call: ToolCall, label: str, approval_request_id: str | None
) -> ResponseMcpCallItem:
    return ResponseMcpCallItem(
        type="mcp_call",
        id=call.id if call.id.startswith("mcp_") else f"mcp_{uuid.uuid4().hex[:24]}",
        server_label=label,
        name=call.name,
        arguments=call.arguments,
        approval_request_id=approval_request_id,
        output=None,
        error=None,
        status="in_progress",
    )


def finished_call_item(item: ResponseMcpCallItem, outcome: CallOutcome) -> ResponseMcpCallItem:
    status = "failed" if outcome.error else "completed"
    return item.model_copy(
        update={"output": outcome.output, "error": outcome.error, "status": status}
    )


def approval_request_item(label: str, name: str, arguments: str) -> ResponseMcpApprovalRequestItem:
    return ResponseMcpApprovalRequestItem(
        type="mcp_approval_request",
        id=f"mcpr_{uuid.uuid4().hex[:24]}",
        server_label=label,
        name=name,
        arguments=arguments,
    )
