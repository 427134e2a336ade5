"""Tool calls in chat completions: tool definitions into the prompt, calls out of the reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from mlxserve.api.tool_parsers import ToolCall, parse_tool_calls, tools_prompt


def wants_tools(tools: list[dict] | None, tool_choice: Any) -> bool:
    return bool(tools) and tool_choice != "none"


def messages_with_tools(
    messages: list[dict], tools: list[dict], family: str, template: str
) -> list[dict]:
    """For templates that do not render `tools`: describe them in the system message, and turn
    earlier calls and their results into plain turns the template can show."""
    if "tools" in template:
        return messages
    plain = [_as_plain_turn(message) for message in messages]
    guide = tools_prompt(tools, family)
    if plain and plain[0]["role"] == "system":
        return [{**plain[0], "content": f"{plain[0]['content']}\n\n{guide}"}, *plain[1:]]
    return [{"role": "system", "content": guide}, *plain]


def _as_plain_turn(message: dict) -> dict:
    if message["role"] == "tool":
        result = f"Result of tool call {message.get('tool_call_id', '')}: {message['content']}"
        return {"role": "user", "content": result}
    if message.get("tool_calls"):
        calls = [call.get("function", call) for call in message["tool_calls"]]
        text = "\n".join(
            json.dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls
        )
        return {"role": "assistant", "content": (message.get("content") or "") + text}
    return message


def chat_tool_calls(calls: list[ToolCall]) -> list[dict]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


async def buffered_tool_chunks(
    shape, events: AsyncIterator, family: str, include_usage: bool
) -> AsyncIterator[dict]:
    """Stream a tool-enabled chat: the reply is read whole, since a call can only be told apart
    from text once it is complete, then sent as content or as tool_calls deltas."""
    yield shape.chunk(None, role=True)
    text, stats = "", None
    async for event in events:
        text += event.text
        stats = event.stats or stats
    content, calls = parse_tool_calls(text, family)
    if calls:
        deltas = [{"index": i, **call} for i, call in enumerate(chat_tool_calls(calls))]
        yield shape.chunk(None, tool_calls=deltas)
        yield shape.chunk(None, finish_reason="tool_calls")
    else:
        yield shape.chunk(text)
        yield shape.chunk(None, finish_reason=stats.finish_reason)
    if include_usage:
        yield shape.usage_chunk(stats)
