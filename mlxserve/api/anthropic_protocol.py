"""Request models for Anthropic's Messages API (/v1/messages), and their translation into the
pipeline's neutral request. Unknown fields (cache_control, metadata, context management) are
accepted and ignored, as Claude Code sends many."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlxserve.api.protocol import sampling_params
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import (
    Constraints,
    ImagePart,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Turn,
)


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


class ContentBlock(AnthropicModel):
    """One block of a message; which fields are set depends on `type`."""

    type: Literal[
        "text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document"
    ]
    text: str | None = None
    source: ImageSource | dict[str, Any] | None = None
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[ContentBlock] | None = None
    is_error: bool = False
    thinking: str | None = None


class Message(AnthropicModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(AnthropicModel):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom", or a server tool such as web_search, which runs remotely


class ToolChoice(AnthropicModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(AnthropicModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)


class OutputFormat(AnthropicModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(AnthropicModel):
    format: OutputFormat | None = None
    effort: str | None = None


class CountTokensRequest(AnthropicModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None  # the structured-outputs beta's name for it

    def conversation(self) -> list[Turn]:
        turns = [Turn("system", [TextPart(_text_of(self.system))])] if self.system else []
        for message in self.messages:
            turns += message_turns(message)
        return turns

    @property
    def reasoning_effort(self) -> str | None:
        """`thinking` as the effort chat templates take: its token budget picks the level."""
        if self.thinking is None or self.thinking.type == "adaptive":
            return None
        if self.thinking.type == "disabled":
            return "none"
        budget = self.thinking.budget_tokens or 0
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"

    def constraints(self) -> Constraints:
        choice = self.tool_choice or ToolChoice(type="auto")
        if choice.type == "tool" and not choice.name:
            raise RequestError(400, "tool_choice.name: required", "tool_choice", "invalid_value")
        output = self.output_format or (self.output_config and self.output_config.format)
        return Constraints(
            tools=[_function_tool(tool) for tool in self.tools or []],
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
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, Any] | None = None

    def to_sampling_params(self):
        temperature = 1.0 if self.temperature is None else self.temperature  # Anthropic's default
        return sampling_params(temperature=temperature, top_p=self.top_p, top_k=self.top_k)


def message_turns(message: Message) -> list[Turn]:
    """A message as turns: a user message's tool results become tool turns first, as chat
    templates expect them."""
    if isinstance(message.content, str):
        return [Turn(message.role, [TextPart(message.content)])]
    tool_turns, parts = [], []
    for block in message.content:
        if block.type == "tool_result":
            result = ToolResultPart(block.tool_use_id or "", _text_of(block.content))
            tool_turns.append(Turn("tool", [result]))
        elif block.type == "document":
            message_text = "document blocks are not supported; send the text as a text block"
            raise RequestError(400, message_text, "messages", "unsupported_content")
        else:
            parts += _parts_of(block)
    return tool_turns + ([Turn(message.role, parts)] if parts or not tool_turns else [])


def _parts_of(block: ContentBlock) -> list[Part]:
    if block.type == "text":
        return [TextPart(block.text or "")]
    if block.type == "image":
        source = ImageSource.model_validate(block.source or {})
        return [ImagePart(source.as_url)]
    if block.type == "tool_use":
        return [ToolCallPart(block.id or "", block.name or "", json.dumps(block.input or {}))]
    return []  # earlier thinking is not shown to the model again


def _text_of(content: str | list[ContentBlock] | None) -> str:
    if isinstance(content, list):
        return "".join(block.text or "" for block in content if block.type == "text")
    return content or ""


def _function_tool(tool: Tool) -> dict[str, Any]:
    if tool.input_schema is None:
        raise RequestError(
            400,
            f"tool '{tool.name}' ({tool.type}) runs on Anthropic's servers; only tools with an "
            "input_schema can be called here",
            "tools",
            "unsupported_tool",
        )
    function = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}
