"""The Responses API: requests turned into chat messages, and OpenAI's response objects."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from pydantic import Field

from mlxserve.api.errors import APIError
from mlxserve.api.protocol import OpenAIModel
from mlxserve.api.tool_parsers import ToolCall
from mlxserve.engine.base import GenerationStats

STORED_RESPONSES = 256


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


class ResponseStore:
    """Stored responses, so `previous_response_id` can continue a conversation; oldest go first."""

    def __init__(self, capacity: int = STORED_RESPONSES):
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[list[dict], dict]] = OrderedDict()

    def put(self, response: dict, messages: list[dict]) -> None:
        self._items[response["id"]] = (messages, response)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def conversation(self, response_id: str) -> list[dict]:
        """The chat messages of a stored response, its own output included."""
        if response_id not in self._items:
            raise APIError(
                404,
                f"no stored response with id '{response_id}'",
                "previous_response_id",
                "response_not_found",
            )
        messages, response = self._items[response_id]
        return messages + output_as_messages(response["output"])


def input_messages(body: ResponsesRequest) -> list[dict]:
    """This turn's input items as chat messages (instructions apply to this turn only)."""
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    return [_item_message(item) for item in items]


def _item_message(item: dict) -> dict:
    kind = item.get("type", "message")
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")}
    if kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")},
        }
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    if kind != "message" or "role" not in item:
        raise APIError(400, f"unsupported input item type '{kind}'", "input")
    content = item.get("content", "")
    if isinstance(content, list):
        if any(part.get("type") == "input_image" for part in content):
            raise APIError(400, "this model does not accept images", "input")
        content = "".join(part.get("text", "") for part in content)
    return {"role": item["role"], "content": content}


def output_as_messages(output: list[dict]) -> list[dict]:
    messages = []
    for item in output:
        if item["type"] == "message":
            text = "".join(part["text"] for part in item["content"])
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append(_item_message(item))
    return messages


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


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call: ToolCall, status: str = "completed") -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex[:24]}",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
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
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "metadata": body.metadata or {},
        "reasoning": None,
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
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex[:24]}"
