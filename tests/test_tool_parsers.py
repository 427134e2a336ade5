"""Tool-call parsers on recorded outputs of the major model families; the chat plain path."""

from __future__ import annotations

import json

import pytest

from mlxserve.pipeline.templates import messages_with_tools
from mlxserve.pipeline.tool_parsers import parse_tool_calls, tool_family, tools_prompt

WEATHER = {"city": "Paris", "unit": "celsius"}

RECORDED = [
    (
        "qwen",
        'I will check.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris", "unit": "celsius"}}\n</tool_call>',
        "I will check.",
    ),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', ""),
    (
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        "",
    ),
    (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
        "",
    ),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}', ""),
    ("gemma", '```tool_code\nget_weather(city="Paris", unit="celsius")\n```', ""),
    (
        "gemma",
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n```',
        "",
    ),
]


@pytest.mark.parametrize("family, output, content", RECORDED)
def test_recorded_calls_are_parsed(family, output, content):
    text, calls = parse_tool_calls(output, family)
    assert text == content
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER)]
    assert calls[0].id.startswith("call_")


def test_two_qwen_calls_and_plain_text():
    output = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    )
    assert [c.name for c in parse_tool_calls(output, "qwen")[1]] == ["a", "b"]
    for family in ("qwen", "llama3", "mistral", "gemma", "json"):
        assert parse_tool_calls("The weather is nice.", family) == ("The weather is nice.", [])
    assert parse_tool_calls('{"no": "name"}', "llama3")[1] == []
    assert parse_tool_calls("<tool_call>{broken</tool_call>", "qwen")[1] == []


def test_family_from_architecture_and_template():
    assert tool_family("qwen2", None) == "qwen"
    assert tool_family("gemma3", None) == "gemma"
    assert tool_family("llama", "...[TOOL_CALLS]...") == "mistral"
    assert tool_family("phi3", None) == "json"


def test_tools_are_described_for_templates_without_tool_support():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ]
    messages = messages_with_tools(history, tools, "qwen", "{{ messages }}")
    assert messages[0]["role"] == "system" and "get_weather" in messages[0]["content"]
    assert "<tool_call>" in tools_prompt(tools, "qwen")
    assert "get_weather" in messages[2]["content"] and "18 C" in messages[3]["content"]
    assert messages_with_tools(history, tools, "qwen", "{% if tools %}{% endif %}") == history


def test_chat_with_tools_answers_in_plain_text_when_no_call(client, model_id):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    messages = [{"role": "user", "content": "Hello"}]
    result = client.chat.completions.create(
        model=model_id, messages=messages, tools=tools, max_tokens=3, temperature=0
    )
    plain = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=3, temperature=0
    )
    assert result.usage.prompt_tokens > plain.usage.prompt_tokens  # the tools were described
    message = result.choices[0].message
    assert message.tool_calls is None and message.content  # greedy: this model does not call
    chunks = list(
        client.chat.completions.create(
            model=model_id, messages=messages, tools=tools, max_tokens=3, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == (message.content or "")
