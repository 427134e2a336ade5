"""tool_choice "auto" on a tiny random model with a byte vocabulary and Qwen's call syntax (the
real 270M model never writes a call marker by itself): text is free until `<tool_call>`, and a
call that starts is always completed as a valid call of one of the tools."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

CALL_MARKER_ID = 4  # "<tool_call>" in the tiny vocabulary
ARGS = {
    "type": "object",
    "properties": {
        "q": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["q", "n"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": ARGS}},
    {
        "type": "function",
        "function": {
            "name": "count",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    },
]
ASK = [{"role": "user", "content": "find it"}]


@pytest.fixture(scope="module")
def tiny_client(tmp_path_factory):
    models = tmp_path_factory.mktemp("tiny-tools")
    record = make_tiny_gemma(
        models / "test" / "tiny-gemma", bytes_vocabulary=True, architecture="qwen2"
    )
    with ServerProcess(models, model=record.id, engine="mlx") as server:
        yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0), server


def ask(client, seed: int, bias: int, stream: bool = False):
    return client.chat.completions.create(
        model="test/tiny-gemma",
        messages=ASK,
        tools=TOOLS,
        tool_choice="auto",
        temperature=1.0,
        seed=seed,
        max_tokens=160,
        logit_bias={str(CALL_MARKER_ID): bias},
        parallel_tool_calls=False,
        stream=stream,
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_started_call_is_always_a_valid_call(tiny_client, seed):
    client, _ = tiny_client
    choice = ask(client, seed, bias=30).choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    for call in choice.message.tool_calls:
        schema = next(
            t["function"]["parameters"]
            for t in TOOLS
            if t["function"]["name"] == call.function.name
        )
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_streamed_auto_call_arrives_in_pieces_like_the_whole_one(tiny_client):
    client, _ = tiny_client
    whole = ask(client, 21, bias=30).choices[0].message.tool_calls
    starts, arguments, pieces = [], {}, 0
    for chunk in ask(client, 21, bias=30, stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if delta.id:
                starts.append(delta.function.name)
            if delta.function.arguments:
                arguments[delta.index] = arguments.get(delta.index, "") + delta.function.arguments
                pieces += 1
    assert starts == [c.function.name for c in whole]
    assert [arguments[i] for i in sorted(arguments)] == [c.function.arguments for c in whole]
    assert pieces > 1


def test_a_plain_answer_has_no_tool_calls_field(tiny_client):
    _, server = tiny_client
    body = {
        "model": "test/tiny-gemma",
        "messages": ASK,
        "tools": TOOLS,
        "max_tokens": 6,
        "logit_bias": {str(CALL_MARKER_ID): -100},
    }
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    choice = reply["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "length"
    assert choice["message"]["content"]


def test_a_call_cut_by_max_tokens_says_length(tiny_client):
    client, _ = tiny_client
    reply = client.chat.completions.create(
        model="test/tiny-gemma",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        temperature=1.0,
        seed=2,
        max_tokens=12,
    )
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 12
