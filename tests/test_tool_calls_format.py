"""Tool calls as the official SDK reads them: Responses function_call items and events, chat
completions tool_calls, from recorded model outputs (a 270M base model does not call tools)."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from mlxserve.api.openai.formatting import ChatShape, full_body, stream_chunks
from mlxserve.api.responses.protocol import ResponsesRequest, input_turns
from mlxserve.api.responses.route import ResponseTurn
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.engine.base import GenerationStats
from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.events import fold
from mlxserve.pipeline.output import OutputStage
from tests.test_responses import EVENTS as MESSAGE_EVENTS
from tests.test_responses import STREAM_EVENTS

GEMMA_CALL = '```tool_code\nget_weather(city="Paris", unit="celsius")\n```'
QWEN_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
)
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def chunk_object(chunk: dict | str) -> ChatCompletionChunk:
    """Text chunks arrive already encoded as JSON."""
    return ChatCompletionChunk.model_validate(
        json.loads(chunk) if isinstance(chunk, str) else chunk
    )


def collect(iterator) -> list:
    async def run():
        return [item async for item in iterator]

    return asyncio.run(run())


def replies(text: str, family: str, prompt_tokens: int = 12, pieces: int = 2):
    """The output stage's events for a reply generated in `pieces`, then the final stats."""
    stats = GenerationStats(prompt_tokens=prompt_tokens, completion_tokens=9)
    stage = OutputStage(SYNTAXES[family] if family else None)
    size = -(-len(text) // pieces)

    async def events():
        for start in range(0, len(text), size):
            for event in stage.feed(text[start : start + size]):
                yield event
        for event in stage.finish(stats):
            yield event

    return events()


def response_events(
    body: ResponsesRequest, text: str, store: ConversationStore, stats_tokens=(30, 15)
):
    """A Responses stream for a reply, and the final response."""
    stats = GenerationStats(*stats_tokens)
    stage = OutputStage(SYNTAXES["gemma"])

    async def outputs():
        for event in [*stage.feed(text), *stage.finish(stats)]:
            yield event

    turn = ResponseTurn(body, "resp_test", "gemma", input_turns(body), store)
    events = collect(turn.events(outputs()))
    return events, events[-1]["response"]


def test_responses_function_call_events_and_stored_turn():
    body = ResponsesRequest(model="gemma", input="Weather in Paris?", tools=TOOLS)
    store = ConversationStore()
    events, final = response_events(body, GEMMA_CALL, store)
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
    history = store.conversation(response.id) + input_turns(follow)
    assert [turn.role for turn in history] == ["user", "assistant", "tool"]
    assert history[1].tool_calls[0].id == history[2].parts[0].call_id == call.call_id


def test_responses_plain_reply_with_tools_is_a_message():
    body = ResponsesRequest(model="gemma", input="Hi", tools=TOOLS)
    events, final = response_events(body, "Hello there.", ConversationStore(), (5, 3))
    events = [STREAM_EVENTS.validate_python(e) for e in events]
    assert [e.type for e in events] == MESSAGE_EVENTS
    assert events[4].delta == events[5].text == "Hello there."
    assert Response.model_validate(final).output_text == "Hello there."


async def first_choice(events):
    """One reply's events as the events of choice 0."""
    async with aclosing(events):
        async for event in events:
            yield 0, event


def test_chat_completion_with_two_calls():
    shape = ChatShape("chatcmpl-test", "qwen")
    folded = asyncio.run(fold(replies(QWEN_CALLS, "hermes", pieces=7)))
    completion = ChatCompletion.model_validate(full_body(shape, [folded], n=1))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    names = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert names == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]


def test_streamed_chat_sends_calls_as_deltas_or_text():
    shape = ChatShape("chatcmpl-test", "q")
    chunks = collect(stream_chunks(shape, first_choice(replies(QWEN_CALLS, "hermes")), 1, 1, True))
    parsed = [chunk_object(c) for c in chunks]
    deltas = [d for c in parsed if c.choices for d in c.choices[0].delta.tool_calls or []]
    starts = [(d.index, d.function.name) for d in deltas if d.id]
    assert starts == [(0, "get_weather"), (1, "get_time")]
    arguments = ["".join(d.function.arguments for d in deltas if d.index == i) for i in (0, 1)]
    assert [json.loads(a) for a in arguments] == [{"city": "Paris"}, {"zone": "CET"}]
    assert parsed[-2].choices[0].finish_reason == "tool_calls"
    assert parsed[-1].usage.prompt_tokens == 12 and not parsed[-1].choices
    chunks = collect(
        stream_chunks(shape, first_choice(replies("Just text.", "hermes")), 1, 1, False)
    )
    parsed = [chunk_object(c) for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in parsed) == "Just text."
    assert parsed[-1].choices[0].finish_reason == "stop"
