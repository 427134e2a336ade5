"""Request models for Anthropic's Messages API (/v1/messages and count_tokens), as the SDK's
beta types define them: messages of three roles (system messages may sit anywhere), content
blocks by type, tools (deferred ones too), thinking, output_config and context_management.
Unknown fields (cache_control, metadata, container...) are accepted and ignored, as Claude Code
sends many; conversation.py turns the messages into the pipeline's turns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlxserve.api.shared.protocol import TopK, TopP, sampling_params, template_effort
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints

Effort = Literal["low", "medium", "high", "xhigh", "max"]
# Blocks only Anthropic's servers produce (their tools ran there): kept by type alone, since
# earlier assistant turns carry them back and nothing here can use what they hold.
SERVER_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "advisor_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
        "container_upload",
        "fallback",
        "browser_state",
    }
)
CLEAR_TOOL_USES = "clear_tool_uses_20250919"
CLEAR_THINKING = "clear_thinking_20251015"


class AnthropicModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImageSource(AnthropicModel):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None

    @property
    def as_url(self) -> str:
        if self.type == "url":
            return self.url or ""
        return f"data:{self.media_type};base64,{self.data}"


class ToolChange(AnthropicModel):
    """The `tool` of a tool_addition or tool_removal block: a reference by name, or (additions
    only) a definition by value."""

    type: str
    name: str | None = None  # tool_reference, mcp_tool_reference
    definition: dict[str, Any] | None = None  # tool_definition
    server_name: str | None = None  # MCP references


class ContentBlock(AnthropicModel):
    """One block of a message; which fields are set depends on `type`, which
    anthropic_conversation checks against where the block sits."""

    type: str
    text: str | None = None
    source: ImageSource | dict[str, Any] | str | None = None  # a search_result's is a string
    title: str | None = None  # search_result
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[ContentBlock] | None = None  # also compaction's summary
    is_error: bool | None = False
    thinking: str | None = None
    tool_name: str | None = None  # tool_reference
    tool: ToolChange | None = None  # tool_addition, tool_removal

    @model_validator(mode="before")
    @classmethod
    def _server_blocks_by_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") in SERVER_BLOCKS:
            return {"type": data["type"]}
        return data


class TurnOutputConfig(AnthropicModel):
    effort: Effort | None = None


class OutputFormat(AnthropicModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(TurnOutputConfig):
    format: OutputFormat | None = None


class Message(AnthropicModel):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]
    # system messages only: whether a later user message hides it, and its turn's effort
    clear_at: Literal["next_user_message", "never"] | None = None
    output_config: TurnOutputConfig | None = None


class Tool(AnthropicModel):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom", or a server tool such as web_search, which runs remotely
    defer_loading: bool = False  # offered only once a tool_reference or tool_addition names it

    def as_function(self) -> dict[str, Any]:
        """The tool as chat templates and grammars take it: a function tool."""
        if self.input_schema is None:
            raise RequestError(
                400,
                f"tool '{self.name}' ({self.type}) runs on Anthropic's servers; only tools with "
                "an input_schema can be called here",
                "tools",
                "unsupported_tool",
            )
        function = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class ToolChoice(AnthropicModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(AnthropicModel):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=0)
    display: Literal["summarized", "omitted", "updates"] | None = None


class InputTokens(AnthropicModel):
    type: Literal["input_tokens"]
    value: int = Field(ge=0)


class ToolUses(AnthropicModel):
    type: Literal["tool_uses"]
    value: int = Field(ge=0)


class ClearToolUses(AnthropicModel):
    """Context editing's tool-result clearing, with Anthropic's defaults."""

    type: Literal["clear_tool_uses_20250919"]
    trigger: InputTokens | ToolUses = Field(
        InputTokens(type="input_tokens", value=100_000), discriminator="type"
    )
    keep: ToolUses = ToolUses(type="tool_uses", value=3)
    clear_at_least: InputTokens | None = None
    exclude_tools: list[str] | None = None
    clear_tool_inputs: bool | list[str] | None = None


class ContextManagement(AnthropicModel):
    edits: list[dict[str, Any]] = Field(default_factory=list)

    def thinking_turns_kept(self) -> int | None:
        """How many of the latest assistant turns keep their thinking under a clear_thinking
        edit (its `keep`, by default 1); None: all of them."""
        for index, edit in enumerate(self.edits):
            if edit.get("type") != CLEAR_THINKING:
                continue
            keep = edit.get("keep", {"type": "thinking_turns", "value": 1})
            if keep == "all":
                return None
            value = keep.get("value") if isinstance(keep, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                where = f"context_management.edits.{index}.keep"
                message = f'{where}: "all" or {{"type": "thinking_turns", "value": N >= 0}}'
                raise RequestError(400, message, where)
            return value
        return None

    def tool_clearing(self) -> ClearToolUses | None:
        """The clear_tool_uses edit, if asked for (compaction is not done: docs/anthropic.md)."""
        found = [
            (i, edit) for i, edit in enumerate(self.edits) if edit.get("type") == CLEAR_TOOL_USES
        ]
        if len(found) > 1:
            where = f"context_management.edits.{found[1][0]}"
            raise RequestError(400, f"{where}: only one {CLEAR_TOOL_USES} edit is allowed", where)
        if not found:
            return None
        return validated(ClearToolUses, found[0][1], f"context_management.edits.{found[0][0]}")


class CountTokensRequest(AnthropicModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None  # the structured-outputs beta's name for it
    context_management: ContextManagement | None = None

    def reasoning_effort(self, turn_effort: str | None) -> str | None:
        """`thinking` as the effort chat templates take: an enabled budget picks the level;
        adaptive thinking takes the effort of its turn (a system message's) or the request's."""
        if self.thinking is None:
            return None
        if self.thinking.type == "disabled":
            return "none"
        if self.thinking.type == "enabled":
            budget = self.thinking.budget_tokens or 0
            return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
        effort = turn_effort or (self.output_config and self.output_config.effort)
        return template_effort(effort)

    @property
    def shows_thinking(self) -> bool:
        return self.thinking is None or self.thinking.display != "omitted"

    def constraints(self, tools: list[Tool]) -> Constraints:
        """Tool choice among the tools offered at the end of the conversation."""
        choice = self.tool_choice or ToolChoice(type="auto")
        if choice.type == "tool" and not choice.name:
            raise RequestError(400, "tool_choice.name: required", "tool_choice", "invalid_value")
        _check_offered(choice, {tool.name for tool in tools})
        output = self.output_format or (self.output_config and self.output_config.format)
        return Constraints(
            tools=[tool.as_function() for tool in tools],
            tool_choice={"auto": "auto", "any": "required", "tool": "required"}.get(
                choice.type, "none"
            ),
            forced_tool=choice.name if choice.type == "tool" else None,
            parallel_tool_calls=not choice.disable_parallel_tool_use,
            json_schema=output.schema_ if output else None,
            schema_param="output_config.format",
        )


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: TopP = None
    top_k: TopK = None
    metadata: dict[str, Any] | None = None

    def to_sampling_params(self):
        temperature = 1.0 if self.temperature is None else self.temperature  # Anthropic's default
        return sampling_params(temperature=temperature, top_p=self.top_p, top_k=self.top_k)


def _check_offered(choice: ToolChoice, offered: set[str]) -> None:
    """A forced call must have a tool to call: one offered at the end of the conversation."""
    if choice.type == "tool" and choice.name not in offered:
        what = f"tool '{choice.name}' is not"
    elif choice.type == "any" and not offered:
        what = "no tool is"
    else:
        return
    message = (
        f"tool_choice: {what} offered here (tools with defer_loading are offered once a "
        "tool_reference or tool_addition names them; tool_removal withdraws one)"
    )
    raise RequestError(400, message, "tool_choice", "invalid_tool_choice")


def validated(model: type[AnthropicModel], data: Any, where: str):
    """`data` as `model`, its first fault named by its place in the request."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join([where, *(str(part) for part in error["loc"])])
        raise RequestError(400, f"{place}: {error['msg']}", place, "invalid_value") from exc
