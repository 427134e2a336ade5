"""The Responses API's request, stored conversations for `previous_response_id`, and OpenAI's
response object. Items are read and written in items.py, tools in tools.py."""

from __future__ import annotations

import time
import uuid
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator

from mlxserve.api.responses.answers import (
    ResponseIncompleteDetails,
    ResponseInputTokensDetails,
    ResponseObject,
    ResponseOutputItem,
    ResponseOutputTokensDetails,
    ResponseUsage,
)
from mlxserve.api.responses.items import item_turns
from mlxserve.api.responses.tools import ToolSet
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.api.shared.protocol import (
    OpenAIModel,
    ReasoningEffort,
    Temperature,
    TopP,
    response_schema,
    sampling_params,
)
from mlxserve.engine.base import GenerationStats
from mlxserve.mcp.tools import McpToolbox
from mlxserve.pipeline.request import Constraints, TextPart, Turn
from mlxserve.sampling.params import SamplingParams

Includable = Literal[
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
]
Summary = Literal["auto", "concise", "detailed"]


class Reasoning(OpenAIModel):
    effort: ReasoningEffort | None = None
    summary: Summary | None = None
    generate_summary: Summary | None = None  # the field's older name


class ResponsesRequest(OpenAIModel):
    model: str
    input: str | list[dict[str, Any]]
    include: list[Includable] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    max_tool_calls: int | None = Field(None, ge=0)  # MCP calls the tool loop makes, at most
    temperature: Temperature = None
    top_p: TopP = None
    top_logprobs: int | None = Field(None, ge=0, le=20)  # alternatives per token
    stream: bool = False
    stream_options: dict[str, Any] | None = None  # no obfuscation padding is ever added
    store: bool = True
    background: bool | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    metadata: dict[str, Any] | None = None
    seed: int | None = None
    text: dict[str, Any] | None = None  # {"format": {...}}: plain text or JSON
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Accepted and echoed: this server has one tier, one cache (by prompt prefix), no policies.
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    client_metadata: dict[str, Any] | None = None  # Codex's turn metadata

    @field_validator("background")
    @classmethod
    def _in_the_foreground(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("background responses are not supported; leave it false")
        return value

    @cached_property
    def toolset(self) -> ToolSet:
        return ToolSet(self.tools)

    @property
    def summarized(self) -> bool:
        """Whether reasoning items carry a summary."""
        return bool(self.reasoning and (self.reasoning.summary or self.reasoning.generate_summary))

    @property
    def sealed_reasoning(self) -> bool:
        """Whether reasoning items carry `encrypted_content`."""
        return "reasoning.encrypted_content" in (self.include or [])

    @property
    def requested_logprobs(self) -> int | None:
        """Alternatives per token when `include` asks for the text's log-probabilities."""
        asked = "message.output_text.logprobs" in (self.include or [])
        return (self.top_logprobs or 0) if asked else None

    def to_sampling_params(self) -> SamplingParams:
        return sampling_params(temperature=self.temperature, top_p=self.top_p, seed=self.seed)

    def constraints(self, mcp: McpToolbox | None = None) -> Constraints:
        choice, forced, tools = self.toolset.choose(self.tool_choice, mcp)
        text_format = (self.text or {}).get("format")
        return Constraints(
            tools=tools,
            tool_choice=choice,
            forced_tool=forced,
            parallel_tool_calls=self.parallel_tool_calls,
            json_schema=response_schema(text_format, "text.format", nested=False),
            schema_param="text.format",
        )


def output_turns(response: dict) -> list[Turn]:
    """A finished response's output items (as sent) as turns."""
    return item_turns(response["output"], lambda _: None, "output")


def input_turns(body: ResponsesRequest, store: ConversationStore | None = None) -> list[Turn]:
    """This turn's input items (instructions apply to this turn only)."""
    if isinstance(body.input, str):
        return [Turn("user", [TextPart(body.input)])]
    return item_turns(body.input, store.item if store else lambda _: None)


def response_object(
    body: ResponsesRequest,
    response_id: str,
    model: str,
    output: list[ResponseOutputItem],
    stats: GenerationStats | None,
) -> ResponseObject:
    status = "in_progress" if stats is None else "completed"
    incomplete = None
    if stats is not None and stats.finish_reason == "length" and body.max_output_tokens:
        status, incomplete = "incomplete", ResponseIncompleteDetails(reason="max_output_tokens")
    return ResponseObject(
        id=response_id,
        object="response",
        created_at=int(time.time()),
        status=status,
        background=False,
        incomplete_details=incomplete,
        error=None,
        model=model,
        output=output,
        usage=None if stats is None else _usage(stats),
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        max_tool_calls=body.max_tool_calls,
        temperature=body.temperature,
        top_p=body.top_p,
        top_logprobs=body.top_logprobs,
        tools=[_echoed(tool) for tool in body.tools or []],
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        previous_response_id=body.previous_response_id,
        store=body.store,
        text=body.text or {"format": {"type": "text"}},
        truncation=body.truncation or "disabled",
        metadata=body.metadata or {},
        reasoning=body.reasoning.model_dump(exclude_none=True) if body.reasoning else None,
        service_tier="default",
        prompt_cache_key=body.prompt_cache_key,
        prompt_cache_retention=body.prompt_cache_retention,
        safety_identifier=body.safety_identifier,
        user=body.user,
    )


def _echoed(tool: dict) -> dict:
    """A tool as the response repeats it: an MCP server's secrets (headers, token) left out."""
    if not isinstance(tool, dict) or tool.get("type") != "mcp":
        return tool
    return {key: value for key, value in tool.items() if key not in ("headers", "authorization")}


def _usage(stats: GenerationStats) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=stats.prompt_tokens,
        input_tokens_details=ResponseInputTokensDetails(
            cached_tokens=stats.cached_prompt_tokens, cache_write_tokens=0
        ),
        output_tokens=stats.completion_tokens,
        output_tokens_details=ResponseOutputTokensDetails(reasoning_tokens=stats.reasoning_tokens),
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
    )


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex[:24]}"
