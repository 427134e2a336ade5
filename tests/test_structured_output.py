"""Structured output through the official SDK on both engines, streaming and not: every sampled
reply to a JSON schema parses and validates, SDK `.parse()` helpers work, and bad schemas are
refused with the field they came from. The replies are sampled from a tiny Gemma 3 of random
weights with the real one's vocabulary: a model that follows no schema of its own accord."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.schemas import SCHEMAS, validate_json


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


PROMPT = [{"role": "user", "content": "Reply with the JSON object asked for."}]
SEEDS = (11, 12)  # the first is asked for whole, the second streamed


def json_reply(client, model_id, schema: dict, seed: int, stream: bool) -> tuple[str, str]:
    """The reply's text and finish reason, sampled at temperature 1.0."""
    response_format = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    kwargs = {
        "model": model_id,
        "messages": PROMPT,
        "response_format": response_format,
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 256,
    }
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        return choice.message.content, choice.finish_reason
    text, reason = "", None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
    return text, reason


def test_every_sampled_reply_validates_against_its_schema(client, model_id):
    jobs = [(name, seed, seed == SEEDS[1]) for name in SCHEMAS for seed in SEEDS]
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(
                lambda job: json_reply(client, model_id, SCHEMAS[job[0]], job[1], job[2]), jobs
            )
        )
    failures = []
    for (name, seed, stream), (text, reason) in zip(jobs, replies, strict=True):
        try:
            validate_json(text, SCHEMAS[name])
            assert reason == "stop"
        except (ValueError, AssertionError, jsonschema.ValidationError) as exc:
            failures.append((name, seed, stream, text, reason, str(exc)[:200]))
    assert failures == [], f"{len(failures)} of {len(jobs)} replies failed"


def test_streamed_json_equals_the_whole_reply(client, model_id):
    schema = SCHEMAS["array_of_objects"]
    whole = json_reply(client, model_id, schema, seed=5, stream=False)
    assert json_reply(client, model_id, schema, seed=5, stream=True) == whole


def test_json_object_mode_gives_an_object(client, model_id):
    reply = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": 'Return a JSON object with a key "answer".'}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=100,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


class City(BaseModel):
    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=10_000_000)
    capital: bool


def test_sdk_parse_helpers_fill_pydantic_models(client, model_id):
    completion = client.chat.completions.parse(
        model=model_id,
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City,
        temperature=1.0,
        seed=3,
        max_tokens=128,
    )
    assert isinstance(completion.choices[0].message.parsed, City)
    response = client.responses.parse(
        model=model_id,
        input="Describe Rome.",
        text_format=City,
        temperature=1.0,
        max_output_tokens=128,
        extra_body={"seed": 4},
    )
    assert isinstance(response.output_parsed, City)
    assert response.text.format.type == "json_schema"


def test_a_cut_reply_says_length(client, model_id):
    reply = client.chat.completions.create(
        model=model_id,
        messages=PROMPT,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": SCHEMAS["deep"]},
        },
        temperature=0,
        max_tokens=3,
    )
    assert reply.choices[0].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(reply.choices[0].message.content)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "bogus"}},
                }
            },
            "response_format",
            "not a valid JSON schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "strict": True,
                        "schema": {"type": "string", "format": "no-such-format"},
                    },
                }
            },
            "response_format",
            "cannot be enforced",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
            "schema object is required",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format", "must be 'text'"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
            "tools[0].function.parameters",
            "not a valid JSON schema",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
            "'g', which is not in tools",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "sometimes",
            },
            "tool_choice",
            "must be 'auto'",
        ),
    ],
)
def test_bad_constraints_are_refused_naming_the_field(server, model_id, body, param, words):
    for path in ("/v1/chat/completions", "/api/v0/chat/completions"):
        reply = httpx.post(
            f"{server.base_url}{path}", json={"model": model_id, "messages": PROMPT, **body}
        )
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["param"] == param and words in error["message"]


def test_responses_text_format_is_enforced_and_checked(client, server, model_id):
    schema = SCHEMAS["person"]
    response = client.responses.create(
        model=model_id,
        input="A person, please.",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
        temperature=1.0,
        max_output_tokens=128,
        extra_body={"seed": 9},
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    bad = httpx.post(
        f"{server.base_url}/v1/responses",
        json={
            "model": model_id,
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "bogus"}}},
        },
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "text.format"


def test_openai_sdk_maps_the_400(client, model_id):
    with pytest.raises(openai.BadRequestError, match="not a valid JSON schema"):
        client.chat.completions.create(
            model=model_id,
            messages=PROMPT,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "bogus"}},
            },
        )


# Keywords the grammar cannot enforce: relaxed, then checked, unless the format is strict.
UNENFORCEABLE = {
    "type": "object",
    "properties": {
        "site": {"type": "string", "format": "uri", "maxLength": 24},
        "tag": {"enum": ["a", "b", "c"]},
    },
    "required": ["site", "tag"],
    "additionalProperties": False,
    "propertyNames": {"maxLength": 4},
}


def test_unenforceable_keywords_are_relaxed_unless_strict(client, server, model_id):
    for stream in (False, True):
        text, reason = json_reply(client, model_id, UNENFORCEABLE, seed=21, stream=stream)
        assert reason == "stop"
        jsonschema.validate(json.loads(text), UNENFORCEABLE)
    for path, response_format, param in (
        (
            "/v1/chat/completions",
            {
                "type": "json_schema",
                "json_schema": {"name": "s", "strict": True, "schema": UNENFORCEABLE},
            },
            "response_format",
        ),
        (
            "/v1/responses",
            {"type": "json_schema", "name": "s", "strict": True, "schema": UNENFORCEABLE},
            "text.format",
        ),
    ):
        body = {"model": model_id}
        if param == "response_format":
            body |= {"messages": PROMPT, "response_format": response_format}
        else:
            body |= {"input": "x", "text": {"format": response_format}}
        refused = httpx.post(f"{server.base_url}{path}", json=body)
        error = refused.json()["error"]
        assert refused.status_code == 400 and error["param"] == param
        assert "propertyNames at / is not supported under strict" in error["message"]


def test_a_grammar_the_engine_cannot_compile_is_refused_at_once(server, model_id):
    """llama.cpp's own llguidance is older than the one this server checks grammars with: a
    grammar only the newer one takes must be refused, never sampled unconstrained."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 4}},
        "required": ["a"],
        "x-guidance": {"json_allow_general_unicode_escapes": True},  # newer than the child's
    }
    started = time.monotonic()
    reply = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": model_id,
            "messages": PROMPT,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "u", "schema": schema},
            },
            "max_tokens": 16,
            "temperature": 0,
        },
        timeout=120,
    )
    if server.engine == "llamacpp":
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["code"] == "grammar_not_supported"
        assert (
            error["param"] == "response_format"
            and "json_allow_general_unicode_escapes" in error["message"]
        )
        assert time.monotonic() - started < 10
    else:  # the MLX engine runs the same llguidance that checked it
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"].startswith('{"a": "')
