"""Which tools an Anthropic reply may call, through the SDK's `client.beta` on both engines:
tools with `defer_loading` are offered once a tool_reference names them (as a client-side tool
search answers), tool_removal withdraws a tool and tool_addition offers one (by name or by
definition) from its place on, and a forced call can only name a tool offered."""

from __future__ import annotations

import anthropic
import pytest

from tests.log_stream import rendered_prompt
from tests.test_anthropic_messages import WEATHER


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


MODEL = "claude-local"
BETAS = ["mid-conversation-tool-changes-2026-07-01", "advanced-tool-use-2025-11-20"]
CLOCK = {**WEATHER, "name": "get_time", "description": "The local time in a city"}
SEARCH = {
    "name": "find_tools",
    "description": "Find tools by keyword",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
}
DEFERRED_WEATHER = {**WEATHER, "defer_loading": True}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def forced(name: str) -> dict:
    return {"type": "tool", "name": name, "disable_parallel_tool_use": True}


def tool_change(kind: str, tool: dict) -> dict:
    return {"role": "system", "content": [{"type": kind, "tool": tool}]}


def by_name(name: str) -> dict:
    return {"type": "tool_reference", "name": name}


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="test-key", max_retries=0)


def counted(claude, messages: list[dict], tools: list[dict], **fields) -> int:
    return claude.beta.messages.count_tokens(
        model=MODEL, messages=messages, tools=tools, betas=BETAS, **fields
    ).input_tokens


def refusal(call) -> str:
    with pytest.raises(anthropic.BadRequestError) as failure:
        call()
    assert failure.value.body["error"]["type"] == "invalid_request_error"
    return failure.value.body["error"]["message"]


def test_a_deferred_tool_is_offered_once_a_tool_reference_names_it(claude, server):
    assert counted(claude, ASK, [SEARCH, DEFERRED_WEATHER]) == counted(claude, ASK, [SEARCH])
    assert counted(claude, ASK, [SEARCH, WEATHER]) > counted(claude, ASK, [SEARCH])
    message = refusal(
        lambda: counted(claude, ASK, [SEARCH, DEFERRED_WEATHER], tool_choice=forced("get_weather"))
    )
    assert message.startswith("tool_choice: tool 'get_weather' is not offered here")
    message = refusal(lambda: counted(claude, ASK, [DEFERRED_WEATHER], tool_choice={"type": "any"}))
    assert message.startswith("tool_choice: no tool is offered here")

    searched = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_s",
                    "name": "find_tools",
                    "input": {"query": "weather"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_s",
                    "content": [{"type": "tool_reference", "tool_name": "get_weather"}],
                }
            ],
        },
    ]
    prompt, message = rendered_prompt(
        server,
        lambda: claude.beta.messages.create(
            model=MODEL,
            max_tokens=40,
            messages=searched,
            tools=[SEARCH, DEFERRED_WEATHER],
            tool_choice=forced("get_weather"),
            betas=BETAS,
        ),
    )
    assert message.stop_reason == "tool_use"
    assert [(block.type, block.name) for block in message.content] == [("tool_use", "get_weather")]
    # offered from here on, and its definition is what the search answered
    assert prompt.count("Current weather for a city") == 2


def test_tool_removal_and_addition_change_what_the_reply_may_call(claude):
    both = [WEATHER, CLOCK]
    removed = [*ASK, tool_change("tool_removal", by_name("get_weather"))]
    assert counted(claude, removed, both) == counted(claude, ASK, [CLOCK])
    message = refusal(lambda: counted(claude, removed, both, tool_choice=forced("get_weather")))
    assert message.startswith("tool_choice: tool 'get_weather' is not offered here")

    later = [{"role": "assistant", "content": "One moment."}, {"role": "user", "content": "Go on."}]
    added_back = [*removed, *later, tool_change("tool_addition", by_name("get_weather"))]
    assert counted(claude, added_back, both) == counted(claude, [*ASK, *later], both)
    unknown = [*ASK, tool_change("tool_removal", by_name("get_mood"))]
    assert refusal(lambda: counted(claude, unknown, both)) == (
        "messages.1.content.0.tool.name: no tool 'get_mood' in tools or defined earlier in messages"
    )


def test_a_tool_defined_by_a_tool_addition_can_be_called(claude):
    asked = [{"role": "user", "content": "What time is it in Rome?"}]
    defined = [
        *asked,
        tool_change("tool_addition", {"type": "tool_definition", "definition": CLOCK}),
    ]
    assert counted(claude, defined, [WEATHER]) == counted(claude, asked, [WEATHER, CLOCK])
    message = claude.beta.messages.create(
        model=MODEL,
        max_tokens=40,
        messages=defined,
        tools=[WEATHER],
        tool_choice=forced("get_time"),
        betas=BETAS,
    )
    assert message.stop_reason == "tool_use"
    assert [(block.type, block.name) for block in message.content] == [("tool_use", "get_time")]
