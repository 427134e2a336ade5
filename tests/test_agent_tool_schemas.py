"""Tool schemas as agent clients send them: the recorded Claude Code and Codex tools compile,
forced calls to tools with keywords the grammar cannot enforce (`format: uri`,
`propertyNames`) are served on both engines with arguments that satisfy the full schema, and a
call that the relaxed part of its schema rejects ends in an error, never passes as valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest

from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from tests.byte_vocabulary import byte_vocabulary, matches

AGENTS = Path(__file__).parent / "data" / "agents"
# Claude Code's WebFetch tool, shortened to keep the reply within a few tokens.
WEB_FETCH = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": 40},
        "prompt": {"type": "string", "maxLength": 12},
    },
    "required": ["url", "prompt"],
    "additionalProperties": False,
}
# A record of strings as zod writes it (`z.record(z.string(), z.string())`).
HEADERS = {
    "type": "object",
    "properties": {
        "headers": {
            "type": "object",
            "propertyNames": {"type": "string"},
            "additionalProperties": {"type": "string", "maxLength": 8},
            "maxProperties": 2,
        }
    },
    "required": ["headers"],
}
# Required by the grammar, refused by `not`: every call fails the check after sampling.
CONTRADICTION = {
    "type": "object",
    "properties": {"a": {"type": "string", "maxLength": 3}},
    "required": ["a"],
    "not": {"required": ["a"]},
}


def recorded_tools(name: str) -> list[dict]:
    """A recorded request's function tools, in the chat completions shape."""
    tools = json.loads((AGENTS / name).read_text())["body"]["tools"]
    chat = []
    for tool in tools:
        if "input_schema" in tool:  # Anthropic
            function = {"name": tool["name"], "parameters": tool["input_schema"]}
        elif tool.get("type") == "function":  # Responses
            function = {k: v for k, v in tool.items() if k != "type"}
        else:
            continue  # tools that run elsewhere (web search, namespaces)
        chat.append({"type": "function", "function": function})
    return chat


@pytest.mark.parametrize(
    "recording",
    ["claude_code_turn1.json", "claude_code_turn2.json", "codex_turn1.json", "codex_turn2.json"],
)
@pytest.mark.parametrize("family", sorted(SYNTAXES))
def test_recorded_agent_tools_compile(recording, family):
    """Every family's grammar takes the agents' tool lists: each tool once, as a call."""
    tools = recorded_tools(recording)
    assert len(tools) >= 7
    for choice in ("auto", "required"):
        constraints = Constraints(tools, tool_choice=choice)
        lark = compile_constraints(constraints, SYNTAXES[family]).lark
        for tool in tools:
            name = tool.get("function", tool)["name"]
            assert name in lark, name


@pytest.fixture(scope="module")
def gemma_tokenizer(models_dir, default_ids):
    """llguidance's view of the real Gemma 3 vocabulary (262,144 tokens), as the MLX engine
    makes it."""
    from mlxserve.engine.mlx.serving.constrained_sampling import GrammarCompiler
    from mlxserve.engine.mlx.tokenizer import load_tokenizer
    from mlxserve.models.store import find_model

    directory = find_model(models_dir, default_ids["mlx"]).directory
    hf = load_tokenizer(Path(directory))._tokenizer
    return GrammarCompiler(hf, 262144, [1, 106]).tokenizer


@pytest.mark.parametrize("family", sorted(SYNTAXES))
def test_agent_tool_grammars_start_on_a_real_vocabulary(gemma_tokenizer, family):
    """Each family's grammar for the agents' tool lists builds a matcher on Gemma's vocabulary
    (a long raw-text bound once made the lexer run out of its budget there)."""
    from llguidance import LLMatcher

    for recording in ("claude_code_turn1.json", "codex_turn1.json"):
        constraints = Constraints(recorded_tools(recording), tool_choice="required")
        matcher = LLMatcher(
            gemma_tokenizer, compile_constraints(constraints, SYNTAXES[family]).lark
        )
        assert not matcher.is_error(), matcher.get_error()


@pytest.mark.parametrize(
    ("recording", "tool", "arguments", "allowed"),
    [
        ("claude_code_turn1.json", "Bash", '{"command": "ls", "timeout": 120000}', True),
        ("claude_code_turn1.json", "Bash", '{"command": "ls", "timeout": 1e9}', False),
        ("claude_code_turn1.json", "DeferredToolPlaceholder", "{}", True),
        ("claude_code_turn1.json", "DeferredToolPlaceholder", '{"type": "object"}', False),
        ("codex_turn1.json", "exec_command", '{"cmd": "ls", "yield_time_ms": 250.5}', True),
        (
            "codex_turn1.json",
            "exec_command",
            '{"cmd": "ls", "yield_time_ms": 12345678901234567}',
            False,
        ),
    ],
)
def test_recorded_tools_take_closed_objects_and_bounded_numbers(
    tmp_path, recording, tool, arguments, allowed
):
    constraints = Constraints(recorded_tools(recording), forced_tool=tool)
    lark = compile_constraints(constraints, SYNTAXES["gemma"]).lark
    call = f'{{"name": "{tool}", "arguments": {arguments}}}'
    assert matches(byte_vocabulary(tmp_path), lark, call) is allowed


def test_a_uri_tool_is_served_with_a_uri(twin_server):
    """The grammar shapes this call, not what the model knows: Gemma 3's random-weight twin (its
    vocabulary and template) serves it."""
    claude = anthropic.Anthropic(base_url=twin_server.base_url, api_key="test-key", max_retries=0)
    message = claude.messages.create(
        model="claude-local",
        max_tokens=64,
        messages=[{"role": "user", "content": "Fetch the example page."}],
        tools=[{"name": "WebFetch", "description": "Fetches a URL", "input_schema": WEB_FETCH}],
        tool_choice={"type": "tool", "name": "WebFetch", "disable_parallel_tool_use": True},
        extra_body={"temperature": 0},
    )
    call = message.content[-1]
    assert message.stop_reason == "tool_use" and call.name == "WebFetch"
    jsonschema.validate(call.input, WEB_FETCH, format_checker=jsonschema.FormatChecker())
    assert re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", call.input["url"])  # the grammar's URI shape


def test_a_property_names_tool_is_served(client, model_id):
    """On the real model, which closes the free-form header names a random-weight one would
    spell on past the reply's length."""
    for seed in (1, 2):
        choice = client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": "Send two headers."}],
            tools=[{"type": "function", "function": {"name": "send", "parameters": HEADERS}}],
            tool_choice={"type": "function", "function": {"name": "send"}},
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=64,
        ).choices[0]
        assert choice.finish_reason == "tool_calls"
        jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), HEADERS)


def contradiction(server, model_id: str, stream: bool) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": model_id,
            "messages": [{"role": "user", "content": "Call it."}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": CONTRADICTION}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 0,
            "max_tokens": 32,
            "stream": stream,
        },
        timeout=120,
    )


def test_a_call_that_fails_the_relaxed_schema_is_an_error(twin_server, twin_ids):
    """Every call the grammar allows fails the check, whatever the model: on the twin."""
    server, model_id = twin_server, twin_ids[twin_server.engine]
    whole = contradiction(server, model_id, stream=False)
    error = whole.json()["error"]
    assert whole.status_code == 500 and error["code"] == "invalid_tool_call"
    assert "call to 'f'" in error["message"] and "schema keyword /not" in error["message"]
    streamed = contradiction(server, model_id, stream=True)
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    last = json.loads(events[-1])
    assert streamed.status_code == 200 and last["error"]["code"] == "invalid_tool_call"
    deltas = [json.loads(e)["choices"][0].get("finish_reason") for e in events[:-1]]
    assert "tool_calls" not in deltas  # the stream never reports the call as finished
