"""The documented shapes of the answers that the Messages API's routes build as dicts: named on
their views with `answers`, so the OpenAPI document gives each a real schema and fuzzing checks
every answer against it. Extra fields are allowed, as the API allows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# /v1/messages


class AnthropicTextBlock(BaseModel):
    type: Literal["text"]
    text: str


class AnthropicThinkingBlock(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str


class AnthropicToolUseBlock(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class AnthropicMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicTextBlock | AnthropicThinkingBlock | AnthropicToolUseBlock]
    stop_reason: Literal[
        "end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"
    ]
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicTokenCount(BaseModel):
    input_tokens: int
