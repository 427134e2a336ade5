"""/v1/messages through the official `anthropic` SDK on both engines and the real Gemma model:
whole and streamed messages (the documented event order, the same text), count_tokens, a
forced tool call and its tool_result round trip (and one cut short by max_tokens), structured
output, stop reasons that tell whose limit ended a reply, Anthropic's error shape, and the
request Claude Code sends at start-up."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pytest

from tests.server import ServerProcess

MODEL = "claude-local"  # any name reaches the loaded model, as Claude Code sends its own
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
HELLO = [{"role": "user", "content": "Say hello."}]
GREEDY = {"extra_body": {"temperature": 0}}  # current SDKs send sampling fields in the raw body


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="test-key", max_retries=0)


def sse_events(server, body: dict) -> list[tuple[str, dict]]:
    """(event name, data) of a streamed message, read off the wire."""
    events, name = [], None
    with httpx.stream(
        "POST", f"{server.base_url}/v1/messages", json={**body, "stream": True}, timeout=120
    ) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_a_whole_message(claude):
    message = claude.messages.create(model=MODEL, max_tokens=4, messages=HELLO, **GREEDY)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.id.startswith("msg")
    assert [block.type for block in message.content] == ["text"] and message.content[0].text
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 4
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 5


def test_the_stream_follows_the_documented_event_order_and_matches_the_whole(claude, server):
    body = {"model": MODEL, "max_tokens": 4, "messages": HELLO, "temperature": 0}
    events = sse_events(server, body)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert all(name == data["type"] for name, data in events)
    streamed = "".join(data["delta"]["text"] for name, data in events[3:-3])
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["output_tokens"] == 4

    sdk_body = {key: value for key, value in body.items() if key != "temperature"}
    sdk_body["extra_body"] = {"temperature": 0}
    whole = claude.messages.create(**sdk_body)
    assert whole.content[0].text == streamed
    with claude.messages.stream(**sdk_body) as stream:  # the SDK's own accumulation
        final = stream.get_final_message()
    assert final.content[0].text == streamed and final.stop_reason == "max_tokens"


def test_count_tokens_equals_the_input_tokens_of_the_message(claude):
    system = "You are terse."
    counted = claude.messages.count_tokens(model=MODEL, system=system, messages=HELLO)
    message = claude.messages.create(
        model=MODEL, system=system, max_tokens=1, messages=HELLO, **GREEDY
    )
    usage = message.usage
    assert counted.input_tokens == usage.input_tokens + usage.cache_read_input_tokens
    longer = claude.messages.count_tokens(model=MODEL, system=system * 5, messages=HELLO)
    assert longer.input_tokens > counted.input_tokens


def test_a_forced_tool_call_and_its_result(claude):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = claude.messages.create(
        model=MODEL,
        max_tokens=80,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert message.stop_reason == "tool_use"
    call = next(block for block in message.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.id
    jsonschema.validate(call.input, WEATHER["input_schema"])

    history = [
        *ask,
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}],
        },
    ]
    answer = claude.messages.create(
        model=MODEL, max_tokens=3, messages=history, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert answer.content[0].type == "text" and answer.stop_reason == "max_tokens"
    counted = claude.messages.count_tokens(model=MODEL, messages=history, tools=[WEATHER])
    assert (
        counted.input_tokens > claude.messages.count_tokens(model=MODEL, messages=ask).input_tokens
    )


def test_a_forced_call_cut_short_by_max_tokens_keeps_its_complete_members(claude):
    note = {
        "name": "save_note",
        "input_schema": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["todo", "idea"]},
                "text": {"type": "string", "minLength": 60},
            },
            "required": ["kind", "text"],
            "additionalProperties": False,
        },
    }
    message = claude.messages.create(
        model=MODEL,
        max_tokens=22,
        messages=[{"role": "user", "content": "Note: buy milk"}],
        tools=[note],
        tool_choice={"type": "tool", "name": "save_note"},
        **GREEDY,
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 22
    [call] = message.content
    assert call.type == "tool_use" and call.name == "save_note"
    assert list(call.input) == ["kind"]  # the text was cut short: only the kind is whole


def test_streamed_tool_input_arrives_as_json_deltas(server):
    body = {
        "model": MODEL,
        "max_tokens": 80,
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    }
    events = sse_events(server, body)
    start = next(
        data
        for name, data in events
        if name == "content_block_start" and data["content_block"]["type"] == "tool_use"
    )
    assert start["content_block"]["name"] == "get_weather"
    pieces = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == start["index"]
    ]
    jsonschema.validate(json.loads("".join(pieces)), WEATHER["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_structured_output_follows_the_schema(claude):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    message = claude.messages.create(
        model=MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": "Is water wet? Answer in JSON."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    jsonschema.validate(json.loads(message.content[0].text), schema)
    assert message.stop_reason == "end_turn"


def test_stop_sequences_and_sampling_fields_in_the_raw_body(claude):
    # temperature/top_k/top_p arrive in the raw body, as current SDKs send them
    message = claude.messages.create(
        model=MODEL,
        max_tokens=30,
        messages=[{"role": "user", "content": "Write a sentence about cats."}],
        stop_sequences=["zzz", " "],
        extra_body={"temperature": 0, "top_k": 1, "top_p": 0.9},
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == " "
    assert " " not in message.content[0].text


@pytest.fixture(scope="module")
def ceiling(models_dir, default_ids):
    """llama.cpp with a server-wide reply ceiling of 8 tokens and a 256-token context."""
    args = ["--max-tokens", "8", "--context-length", "256"]
    model = default_ids["llamacpp"]
    with ServerProcess(models_dir, model=model, engine="llamacpp", extra_args=args) as running:
        yield anthropic.Anthropic(base_url=running.base_url, api_key="x", max_retries=0)


def test_stop_reasons_tell_whose_limit_ended_the_reply(ceiling):
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    own = ceiling.messages.create(model=MODEL, max_tokens=4, messages=story, **GREEDY)
    assert (own.stop_reason, own.usage.output_tokens) == ("max_tokens", 4)
    # the operator's ceiling, below the client's max_tokens, is no failure of the reply
    capped = ceiling.messages.create(model=MODEL, max_tokens=100, messages=story, **GREEDY)
    assert (capped.stop_reason, capped.usage.output_tokens) == ("end_turn", 8)

    def filler(words: int) -> list[dict]:
        return [{"role": "user", "content": "a " * words}]

    per_hundred = ceiling.messages.count_tokens(model=MODEL, messages=filler(100)).input_tokens
    words = 256 - 3 - (per_hundred - 100)  # leaves room for 3 tokens, below the ceiling
    assert ceiling.messages.count_tokens(model=MODEL, messages=filler(words)).input_tokens == 253
    full = ceiling.messages.create(model=MODEL, max_tokens=100, messages=filler(words), **GREEDY)
    assert (full.stop_reason, full.usage.output_tokens) == ("model_context_window_exceeded", 3)
    with ceiling.messages.stream(
        model=MODEL, max_tokens=100, messages=filler(words), **GREEDY
    ) as stream:
        assert stream.get_final_message().stop_reason == "model_context_window_exceeded"


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"model": MODEL, "messages": HELLO}, 400, "invalid_request_error"),  # no max_tokens
        ({"model": MODEL, "max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HELLO, "temperature": 1.5},
            400,  # Anthropic answers invalid values with a 400, not a 422
            "invalid_request_error",
        ),
    ],
)
def test_errors_have_anthropics_shape(server, body, status, kind):
    reply = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=30)
    assert reply.status_code == status
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert error["error"]["message"]


def test_the_sdk_raises_typed_errors(claude):
    with pytest.raises(anthropic.BadRequestError) as failure:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[])
    assert failure.value.body["error"]["type"] == "invalid_request_error"
