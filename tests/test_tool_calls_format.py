"""Tool calls as the official SDK reads them: Responses function_call items and events, chat
completions tool_calls, from recorded model outputs (a 270M base model does not call tools)."""

from __future__ import annotations

import asyncio
import json

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from mlxserve.api.formatting import ResponseShape
from mlxserve.api.responses import ResponsesRequest, ResponseStore, input_messages
from mlxserve.api.routes_responses import ResponseTurn
from mlxserve.api.tool_calls import buffered_tool_chunks, chat_tool_calls
from mlxserve.api.tool_parsers import parse_tool_calls
from mlxserve.engine.base import GenerationEvent, GenerationStats
from tests.test_responses import EVENTS as MESSAGE_EVENTS
from tests.test_responses import STREAM_EVENTS

GEMMA_CALL = '```tool_code\nget_weather(city="Paris", unit="celsius")\n```'
QWEN_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
)
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def collect(iterator) -> list:
    async def run():
        return [item async for item in iterator]

    return asyncio.run(run())


def replies(text: str, prompt_tokens: int = 12):
    """The engine's event stream for a reply: two pieces, then the final stats."""
    stats = GenerationStats(prompt_tokens=prompt_tokens, completion_tokens=9)
    half = len(text) // 2

    async def events():
        yield GenerationEvent(text=text[:half])
        yield GenerationEvent(text=text[half:], stats=stats)

    return events(), stats


def test_responses_function_call_events_and_stored_turn():
    body = ResponsesRequest(model="gemma", input="Weather in Paris?", tools=TOOLS)
    store = ResponseStore()
    turn = ResponseTurn(body, "gemma", "gemma", input_messages(body), store)
    output = turn.output_items(GEMMA_CALL)
    events = turn.started_events() + collect(turn.output_events(output))
    final = turn.finish(output, GenerationStats(prompt_tokens=30, completion_tokens=15))
    events.append(turn.event("response.completed", response=final))
    parsed = [STREAM_EVENTS.validate_python(e) for e in events]
    assert [e.type for e in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in parsed] == list(range(7))
    response = Response.model_validate(final)
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert parsed[4].arguments == call.arguments and response.tools[0].name == "get_weather"
    # The next turn sends the result; the stored call comes back as the assistant's tool call.
    follow = ResponsesRequest(
        model="gemma",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
        previous_response_id=response.id,
    )
    history = store.conversation(response.id) + input_messages(follow)
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["id"] == history[2]["tool_call_id"] == call.call_id


def test_responses_plain_reply_with_tools_is_a_message():
    body = ResponsesRequest(model="gemma", input="Hi", tools=TOOLS)
    turn = ResponseTurn(body, "gemma", "gemma", input_messages(body), ResponseStore())
    output = turn.output_items("Hello there.")
    events = [STREAM_EVENTS.validate_python(e) for e in collect(turn.output_events(output))]
    assert [e.type for e in events] == MESSAGE_EVENTS[2:-1]  # without created/completed
    assert events[2].delta == events[3].text == "Hello there."
    final = turn.finish(output, GenerationStats(prompt_tokens=5, completion_tokens=3))
    assert Response.model_validate(final).output_text == "Hello there."


def test_chat_completion_with_two_calls():
    content, calls = parse_tool_calls(QWEN_CALLS, "qwen")
    shape = ResponseShape("chat", "qwen")
    stats = GenerationStats(prompt_tokens=40, completion_tokens=30)
    completion = ChatCompletion.model_validate(shape.full(content, stats, chat_tool_calls(calls)))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    names = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert names == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]


def test_streamed_chat_sends_calls_as_deltas_or_text():
    events, _ = replies(QWEN_CALLS)
    chunks = collect(buffered_tool_chunks(ResponseShape("chat", "q"), events, "qwen", True))
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    deltas = [d for c in parsed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    assert parsed[-2].choices[0].finish_reason == "tool_calls"
    assert parsed[-1].usage.prompt_tokens == 12 and not parsed[-1].choices
    events, _ = replies("Just text.")
    chunks = collect(buffered_tool_chunks(ResponseShape("chat", "q"), events, "qwen", False))
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in parsed) == "Just text."
    assert parsed[-1].choices[0].finish_reason == "stop"
