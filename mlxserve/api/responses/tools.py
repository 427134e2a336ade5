"""The Responses API's tools as the function tools chat templates know: function tools as they
are, custom tools as functions of one string (custom.py), the tools of a namespace under
`namespace.name`, and the tools of remote MCP servers (mcp.py) by their own names. Built-in
tools that only OpenAI runs (web search, file search...) are accepted and not offered to the
model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlxserve.api.responses.custom import check_format, custom_function
from mlxserve.mcp.tools import McpToolbox
from mlxserve.pipeline.errors import RequestError

log = logging.getLogger(__name__)

# Built-in tool types: OpenAI's servers run them, or only OpenAI's models emit their calls.
BUILT_IN = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "computer",
        "computer_use",
        "computer_use_preview",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
        "programmatic_tool_calling",
    }
)
_noted: set[str] = set()  # built-in types already logged, so a client's every turn is not


def flat_name(namespace: str | None, name: str) -> str:
    """The name a namespaced tool is offered (and called) under."""
    return f"{namespace}.{name}" if namespace else name


@dataclass(frozen=True)
class Tool:
    kind: str  # function | custom
    name: str
    namespace: str | None
    definition: dict  # as the client sent it
    context: str = ""  # its namespace's description

    KINDS = ("function", "custom")  # the tools the model is offered

    @property
    def flat_name(self) -> str:
        return flat_name(self.namespace, self.name)

    def chat_function(self) -> dict:
        """The tool in the chat completions shape templates and constraints expect."""
        description = joined(self.context, self.definition.get("description"))
        if self.kind == "custom":
            return custom_function(self.flat_name, self.definition, description)
        function = {
            "name": self.flat_name,
            "description": description,
            "parameters": self.definition.get("parameters"),
        }
        return {"type": "function", "function": {k: v for k, v in function.items() if v}}


class ToolSet:
    """A request's tools by the name the model calls them by."""

    def __init__(self, tools: list[dict] | None):
        self.tools: dict[str, Tool] = {}
        self.mcp: list[tuple[str, dict]] = []  # MCP servers' definitions, by where they are
        for index, tool in enumerate(tools or []):
            self._add(tool, f"tools[{index}]")

    def get(self, called: str) -> Tool | None:
        return self.tools.get(called)

    def _add(self, tool, param: str, namespace: str | None = None, context: str = "") -> None:
        kind = tool.get("type") if isinstance(tool, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind == "namespace" and namespace is None:
            members = tool.get("tools")
            if not isinstance(members, list):
                message = f"{param}.tools: a namespace needs a list of tools"
                raise RequestError(400, message, f"{param}.tools", "missing_required_parameter")
            name, described = _name(tool, param), _text(tool.get("description"))
            for index, member in enumerate(members):
                self._add(member, f"{param}.tools[{index}]", name, described)
        elif kind in Tool.KINDS:
            if kind == "custom":
                check_format(tool.get("format"), f"{param}.format")
            entry = Tool(kind, _name(tool, param), namespace, tool, context)
            if entry.flat_name in self.tools:
                message = f"{param}.name: a second tool named '{entry.flat_name}'"
                raise RequestError(400, message, f"{param}.name", "duplicate_tool")
            self.tools[entry.flat_name] = entry
        elif kind == "mcp" and namespace is None:
            self.mcp.append((param, tool))
        elif kind in BUILT_IN and namespace is None:
            if kind not in _noted:
                _noted.add(kind)
                log.info("'%s' tools are built into OpenAI's service; not offered here", kind)
        else:
            message = f"{param}.type: unsupported tool type {kind!r}"
            raise RequestError(400, message, f"{param}.type", "invalid_value")

    def choose(self, value, mcp: McpToolbox | None = None) -> tuple[str, str | None, list[dict]]:
        """tool_choice as (auto | none | required, the forced tool's name as the model calls
        it, the tools offered in the chat completions shape)."""
        every = [tool.chat_function() for tool in self.tools.values()]
        every += mcp.chat_functions() if mcp else []
        if value is None or value in ("auto", "none", "required"):
            return value or "auto", None, every
        kind = value.get("type") if isinstance(value, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind in Tool.KINDS:
            return "required", self._named(value, kind).flat_name, every
        if kind == "mcp":
            return _mcp_choice(value, mcp, every)
        mode, listed = (value.get("mode", "auto"), value.get("tools")) if kind else (None, None)
        if kind == "allowed_tools" and mode in ("auto", "required") and isinstance(listed, list):
            named = [t for t in listed if isinstance(t, dict) and t.get("type") in Tool.KINDS]
            return mode, None, [self._named(t, t["type"]).chat_function() for t in named]
        if kind in BUILT_IN:
            message = f"tool_choice: '{kind}' is built into OpenAI's service and not offered here"
            raise RequestError(400, message, "tool_choice", "invalid_tool_choice")
        raise RequestError(
            400,
            "tool_choice must be 'auto', 'none', 'required', "
            '{"type": "function" | "custom", "name": ...}, {"type": "mcp", "server_label", '
            '"name"} or {"type": "allowed_tools", "mode": "auto" | "required", "tools": [...]}',
            "tool_choice",
            "invalid_tool_choice",
        )

    def _named(self, choice: dict, kind: str) -> Tool:
        """The tool a choice names: by the name it is offered under, by name and namespace, or
        by a name only one namespace has."""
        name, namespace = choice.get("name"), choice.get("namespace")
        tool = self.tools.get(flat_name(namespace, name) if isinstance(name, str) else "")
        if tool is None and namespace is None:
            alike = [t for t in self.tools.values() if t.name == name]
            tool = alike[0] if len(alike) == 1 else None
        if tool is None or tool.kind != kind:
            message = f"tool_choice names {kind} tool {name!r}, which is not in tools"
            raise RequestError(400, message, "tool_choice", "invalid_tool_choice")
        return tool


def _mcp_choice(
    value: dict, mcp: McpToolbox | None, every: list[dict]
) -> tuple[str, str | None, list[dict]]:
    """{"type": "mcp", "server_label", "name"}: a call of that tool, or (without a name) of
    any tool of that server."""
    label, name = value.get("server_label"), value.get("name")
    tools = [tool for tool in (mcp.tools.values() if mcp else ()) if tool.server_label == label]
    if name is None and tools:
        return "required", None, [tool.chat_function() for tool in tools]
    if any(tool.name == name for tool in tools):
        return "required", name, every
    message = f"tool_choice names MCP tool {name!r} of server {label!r}, which tools do not offer"
    raise RequestError(400, message, "tool_choice", "invalid_tool_choice")


def joined(*texts) -> str:
    """The descriptions given (strings only), as paragraphs."""
    return "\n\n".join(text for text in texts if isinstance(text, str) and text)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _name(tool: dict, param: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(
            400, f"{param}.name: a tool needs a name", f"{param}.name", "missing_required_parameter"
        )
    return name
