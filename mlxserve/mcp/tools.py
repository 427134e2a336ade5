"""The MCP tools one request offers the model: each server's listing, filtered by what the
request allows, as the function tools chat templates and the call grammar know. A request's
toolbox also owns the connections it opened, and leaves them when it ends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlxserve.mcp.pool import McpServers
from mlxserve.mcp.servers import Connection
from mlxserve.mcp.specs import ServerChoice
from mlxserve.pipeline.errors import RequestError

if TYPE_CHECKING:
    from mcp.types import Tool


def read_only(tool: Tool) -> bool:
    """Whether the server marks the tool as one that changes nothing (`readOnlyHint`)."""
    return bool(tool.annotations and tool.annotations.read_only_hint)


@dataclass(frozen=True)
class McpTool:
    name: str  # as the model calls it: the server's own name for it
    server_label: str
    definition: Tool = field(repr=False)
    connection: Connection = field(repr=False)
    needs_approval: bool = False
    provider: dict = field(default_factory=dict)  # which integration offers it (LM Studio's)

    def chat_function(self) -> dict:
        """The tool in the chat completions shape templates and constraints expect."""
        function = {
            "name": self.name,
            "description": self.definition.description or self.definition.title,
            "parameters": self.definition.input_schema or {"type": "object"},
        }
        return {"type": "function", "function": {k: v for k, v in function.items() if v}}

    def listing(self) -> dict:
        """The tool as OpenAI's mcp_list_tools item shows it."""
        annotations = self.definition.annotations
        return {
            "name": self.name,
            "description": self.definition.description,
            "input_schema": self.definition.input_schema,
            "annotations": annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
            if annotations
            else None,
        }


@dataclass
class ServerListing:
    server_label: str
    tools: list[McpTool]


class McpToolbox:
    """The MCP tools of one request, by the name the model calls them by."""

    def __init__(self, servers: McpServers, taken: Iterable[str] = ()):
        self.servers = servers
        self.tools: dict[str, McpTool] = {}
        self.listings: list[ServerListing] = []
        self._taken = set(taken)  # names of the request's other tools
        self._opened: list[Connection] = []

    def get(self, name: str) -> McpTool | None:
        return self.tools.get(name)

    def chat_functions(self) -> list[dict]:
        return [tool.chat_function() for tool in self.tools.values()]

    @classmethod
    async def open(
        cls, servers: McpServers, choices: list[ServerChoice], taken: Iterable[str] = ()
    ) -> McpToolbox:
        """The servers a request asks for, checked all before any is connected, then connected
        and listed (a 424 naming one that cannot be). The caller closes the toolbox."""
        await servers.check(choices)
        toolbox = cls(servers, taken)
        try:
            for choice in choices:
                await toolbox._open(choice)
        except BaseException:
            await toolbox.close()
            raise
        return toolbox

    async def _open(self, choice: ServerChoice) -> None:
        """A server named by URL is connected for this request only; an mcp.json server is
        kept open across requests."""
        if choice.named_by_url:
            connection = await self.servers.connect(choice.spec, choice.param)
            self._opened.append(connection)
            code = "mcp_connection_error"
        else:
            spec = self.servers.plugin_spec(choice.plugin_id, choice.param)
            connection = await self.servers.plugin(spec, choice.param)
            code = "plugin_connection_error"
        await self._add(connection, choice, code)

    async def _add(self, connection: Connection, choice: ServerChoice, code: str) -> None:
        param, allowed, approval = choice.param, choice.allowed, choice.approval
        label = connection.spec.label
        if any(listing.server_label == label for listing in self.listings):
            message = f"{param}: a second MCP server labelled '{label}'"
            raise RequestError(400, message, param, "duplicate_server_label")
        offered = []
        for definition in await connection.list_tools(param, code):
            if allowed is not None and not allowed(definition):
                continue
            if definition.name in self.tools or definition.name in self._taken:
                message = (
                    f"{param}: server '{label}' offers a tool named '{definition.name}', as "
                    "another tool of this request does; leave one out with allowed_tools"
                )
                raise RequestError(400, message, param, "duplicate_tool")
            tool = McpTool(
                definition.name,
                label,
                definition,
                connection,
                needs_approval=bool(approval and approval(definition)),
                provider=choice.provider,
            )
            self.tools[tool.name] = tool
            offered.append(tool)
        self.listings.append(ServerListing(label, offered))

    async def close(self) -> None:
        """Leave the servers connected for this request (kept ones stay open)."""
        opened, self._opened = self._opened, []
        for connection in opened:
            await self.servers.release(connection)
