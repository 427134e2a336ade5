"""The answers of the Messages API as pydantic models: the message (whole, and as its stream
events carry it) and the token count. The routes build these and send them with `as_dict`; their
views name them with `answers`, so the OpenAPI document gives each its schema and fuzzing checks
every answer against it."""

from __future__ import annotations

from typing import Literal

from mlxserve.api.shared.protocol import Answer

StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"
]


class AnthropicTextBlock(Answer):
    type: Literal["text"]
    text: str


class AnthropicThinkingBlock(Answer):
    type: Literal["thinking"]
    thinking: str
    signature: str


class AnthropicToolUseBlock(Answer):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict


AnthropicBlock = AnthropicTextBlock | AnthropicThinkingBlock | AnthropicToolUseBlock


class AnthropicUsage(Answer):
    """message_start's usage counts the input and no output yet; the cache counts come with the
    finished message."""

    input_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens: int


class AnthropicAppliedEdit(Answer):
    type: Literal["clear_tool_uses_20250919"]
    cleared_tool_uses: int
    cleared_input_tokens: int


class AnthropicContextManagement(Answer):
    applied_edits: list[AnthropicAppliedEdit]  # empty when no edit was worth applying


class AnthropicMessage(Answer):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicBlock]
    stop_reason: StopReason | None  # None only in message_start, before the reply ends
    stop_sequence: str | None
    usage: AnthropicUsage
    context_management: AnthropicContextManagement | None = None  # when the request asked


class AnthropicTokenCountContext(Answer):
    original_input_tokens: int  # before the context edits


class AnthropicTokenCount(Answer):
    input_tokens: int
    context_management: AnthropicTokenCountContext | None = None  # when the request asked
