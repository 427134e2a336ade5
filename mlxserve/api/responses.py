"""The Responses API's wire format: its request, input items as neutral turns, stored responses
for `previous_response_id`, and OpenAI's response objects."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from pydantic import Field

from mlxserve.api.protocol import (
    OpenAIModel,
    ReasoningEffort,
    response_schema,
    sampling_params,
    tool_choice,
)
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import (
    Constraints,
    ImagePart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Turn,
)
from mlxserve.sampling.params import SamplingParams

STORED_RESPONSES = 256


class Reasoning(OpenAIModel):
    effort: ReasoningEffort | None = None


class ResponsesRequest(OpenAIModel):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    metadata: dict[str, Any] | None = None
    seed: int | None = None
    text: dict[str, Any] | None = None  # {"format": {...}}: plain text or JSON
    reasoning: Reasoning | None = None

    def to_sampling_params(self) -> SamplingParams:
        return sampling_params(temperature=self.temperature, top_p=self.top_p, seed=self.seed)

    def constraints(self) -> Constraints:
        choice, forced = tool_choice(self.tool_choice, lambda c: c)
        text_format = (self.text or {}).get("format")
        return Constraints(
            tools=chat_tools(self.tools) or [],
            tool_choice=choice,
            forced_tool=forced,
            parallel_tool_calls=self.parallel_tool_calls,
            json_schema=response_schema(text_format, "text.format", nested=False),
            schema_param="text.format",
        )


class ConversationStore:
    """Finished conversations by response id, so `previous_response_id` can continue (or
    branch) one; the oldest go first."""

    def __init__(self, capacity: int = STORED_RESPONSES):
        self.capacity = capacity
        self._items: OrderedDict[str, list[Turn]] = OrderedDict()

    def put(self, response_id: str, turns: list[Turn]) -> None:
        self._items[response_id] = turns
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def conversation(self, response_id: str) -> list[Turn]:
        """The turns of a stored response, its own reply included."""
        if response_id not in self._items:
            raise RequestError(
                404,
                f"no stored response with id '{response_id}'",
                "previous_response_id",
                "response_not_found",
            )
        return self._items[response_id]


def output_turns(response: dict) -> list[Turn]:
    """A finished response's output items as turns."""
    return _turns(response["output"])


def input_turns(body: ResponsesRequest) -> list[Turn]:
    """This turn's input items (instructions apply to this turn only)."""
    if isinstance(body.input, str):
        return [Turn("user", [TextPart(body.input)])]
    return _turns(body.input)


def _turns(items: list[dict]) -> list[Turn]:
    # Earlier reasoning is not shown to the model again, as chat templates drop it too.
    return [item_turn(item) for item in items if item.get("type") != "reasoning"]


def item_turn(item: dict) -> Turn:
    """An input or output item as a turn."""
    kind = item.get("type", "message")
    if kind == "function_call_output":
        return Turn("tool", [ToolResultPart(item.get("call_id") or "", str(item.get("output")))])
    if kind == "function_call":
        call = ToolCallPart(
            item.get("call_id") or "", item.get("name") or "", item.get("arguments", "{}")
        )
        return Turn("assistant", [call])
    if kind != "message" or "role" not in item:
        raise RequestError(400, f"unsupported input item type '{kind}'", "input")
    if item["role"] not in ROLES:
        raise RequestError(422, f"input: unknown role '{item['role']}'", "input", "invalid_value")
    content = item.get("content", "")
    if isinstance(content, str):
        return Turn(ROLES[item["role"]], [TextPart(content)])
    return Turn(ROLES[item["role"]], [_part(part) for part in content])


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _part(part: dict) -> TextPart | ImagePart:
    if part.get("type") == "input_image":
        return ImagePart(str(part.get("image_url") or ""))
    return TextPart(part.get("text", ""))


def chat_tools(tools: list[dict] | None) -> list[dict] | None:
    """Responses' flat function tools in the chat completions shape templates expect."""
    if not tools:
        return None
    flat = [t for t in tools if t.get("type") == "function"]
    return [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in flat
    ] or None


def message_item(text: str, item_id: str, status: str = "completed") -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [output_text(text)] if status == "completed" else [],
    }


def reasoning_item(text: str, item_id: str) -> dict:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
    }


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex[:24]}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_object(
    body: ResponsesRequest,
    response_id: str,
    model: str,
    output: list[dict],
    stats: GenerationStats | None,
) -> dict:
    status = "in_progress" if stats is None else "completed"
    incomplete = None
    if stats is not None and stats.finish_reason == "length" and body.max_output_tokens:
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "incomplete_details": incomplete,
        "error": None,
        "model": model,
        "output": output,
        "usage": _usage(stats),
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tools": body.tools or [],
        "tool_choice": body.tool_choice,
        "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "text": body.text or {"format": {"type": "text"}},
        "truncation": "disabled",
        "metadata": body.metadata or {},
        "reasoning": body.reasoning.model_dump() if body.reasoning else None,
        "user": None,
    }


def _usage(stats: GenerationStats | None) -> dict | None:
    if stats is None:
        return None
    return {
        "input_tokens": stats.prompt_tokens,
        # No separate cache writes are billed here; the SDK requires the field.
        "input_tokens_details": {
            "cached_tokens": stats.cached_prompt_tokens,
            "cache_write_tokens": 0,
        },
        "output_tokens": stats.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex[:24]}"
