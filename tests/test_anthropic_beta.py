"""Anthropic's beta Messages surface as Claude Code sends it, through the SDK's `client.beta`
(which adds `?beta=true` and the `anthropic-beta` header) on both engines: system messages at
their place in the prompt and `clear_at`, thinking and effort, content block types checked
where they sit, blocks only Anthropic's servers produce skipped, and context management (an
applied clear_tool_uses edit changes the prompt and is reported)."""

from __future__ import annotations

import anthropic
import pytest

from mlxserve.api.anthropic.conversation import conversation_of
from mlxserve.api.anthropic.protocol import MessagesRequest
from mlxserve.api.anthropic.stream import MessageBuilder, Reply
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.events import Finished, ReasoningDelta, TextDelta
from tests.log_stream import rendered_prompt


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


MODEL = "claude-local"
BETAS = [
    "claude-code-20250219",
    "context-management-2025-06-27",
    "mid-conversation-tool-changes-2026-07-01",
    "advanced-tool-use-2025-11-20",
    "effort-2025-11-24",
]
GREEDY = {"temperature": 0}
CLEARED = "[tool result cleared to save context]"
CLEAR_OLDER = {
    "type": "clear_tool_uses_20250919",
    "trigger": {"type": "tool_uses", "value": 2},
    "keep": {"type": "tool_uses", "value": 1},
}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def system(text: str, **fields) -> dict:
    return {"role": "system", "content": text, **fields}


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="test-key", max_retries=0)


def counted(claude, messages: list[dict], **fields) -> int:
    return claude.beta.messages.count_tokens(
        model=MODEL, messages=messages, betas=BETAS, **fields
    ).input_tokens


def test_system_messages_reach_the_prompt_at_their_place(claude, server):
    messages = [
        user("Question one."),
        system("Rule alpha applies."),
        {"role": "assistant", "content": "Answer one."},
        user("Question two."),
        {
            "role": "system",
            "content": [
                {
                    "type": "text",
                    "text": "Rule beta applies.",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "output_config": {"effort": "low"},
        },
    ]
    prompt, message = rendered_prompt(
        server,
        lambda: claude.beta.messages.create(
            model=MODEL,
            max_tokens=1,
            system="Be brief.",
            messages=messages,
            betas=BETAS,
            extra_body=GREEDY,
        ),
    )
    assert message.stop_reason == "max_tokens"
    texts = (
        "Be brief.",
        "Question one.",
        "Rule alpha",
        "Answer one.",
        "Question two.",
        "Rule beta",
    )
    places = [prompt.index(text) for text in texts]
    assert places == sorted(places)
    # Gemma's template has no system turns after the first: each joins the user turn before it
    assert "Question one.\n\nRule alpha applies.<end_of_turn>" in prompt
    assert prompt.endswith(
        "Question two.\n\nRule beta applies.<end_of_turn>\n<start_of_turn>model\n"
    )


def test_clear_at_next_user_message_hides_a_system_message_once_a_user_message_follows(claude):
    asked = [user("Status?")]
    later = [{"role": "assistant", "content": "Checking."}, user("And now?")]
    hidden_later = system("Reminder: the build is red.", clear_at="next_user_message")
    always = system("Reminder: the build is red.", clear_at="never")
    assert counted(claude, [*asked, hidden_later]) == counted(claude, [*asked, always])
    assert counted(claude, [*asked, hidden_later]) > counted(claude, asked)
    assert counted(claude, [*asked, hidden_later, *later]) == counted(claude, [*asked, *later])
    assert counted(claude, [*asked, always, *later]) > counted(claude, [*asked, *later])


@pytest.mark.parametrize(
    ("thinking", "effort", "turn", "expected"),
    [
        ({"type": "adaptive", "display": "omitted"}, "medium", [], "medium"),
        ({"type": "adaptive"}, "max", [], "high"),
        (
            {"type": "adaptive"},
            "low",
            [system("Think.", output_config={"effort": "xhigh"})],
            "high",
        ),
        # a system message's effort holds for its own turn only
        (
            {"type": "adaptive"},
            "low",
            [
                system("Think.", output_config={"effort": "high"}),
                {"role": "assistant", "content": "Hm."},
                user("Go."),
            ],
            "low",
        ),
        ({"type": "adaptive"}, None, [], None),
        ({"type": "disabled"}, "high", [], "none"),
        ({"type": "enabled", "budget_tokens": 2048}, "high", [], "low"),
        ({"type": "enabled", "budget_tokens": 20000}, None, [], "high"),
        (None, "high", [], None),
    ],
)
def test_thinking_and_effort_become_the_templates_reasoning_effort(
    thinking, effort, turn, expected
):
    body = {"model": MODEL, "max_tokens": 5, "messages": [user("Hi"), *turn]}
    if thinking is not None:
        body["thinking"] = thinking
    if effort is not None:
        body["output_config"] = {"effort": effort}
    request = MessagesRequest.model_validate(body)
    assert request.reasoning_effort(conversation_of(request).effort) == expected


def test_omitted_thinking_is_sent_as_empty_thinking_blocks():
    reply = Reply("msg_1", MODEL, 5, max_tokens=10, context_length=100, shows_thinking=False)
    builder = MessageBuilder(reply)
    events = builder.render(ReasoningDelta("a secret plan")) + builder.render(TextDelta("Hi"))
    events += builder.render(
        Finished("stop", GenerationStats(prompt_tokens=5, completion_tokens=4))
    )
    assert [event["type"] for event in events] == [
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert builder.whole()["content"] == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": "Hi"},
    ]
    shown = MessageBuilder(Reply("msg_2", MODEL, 5, max_tokens=10, context_length=100))
    assert shown.render(ReasoningDelta("a plan"))[-1]["delta"] == {
        "type": "thinking_delta",
        "thinking": "a plan",
    }


@pytest.mark.parametrize(
    "thinking", [{"type": "adaptive", "display": "omitted"}, {"type": "disabled"}]
)
def test_thinking_effort_and_context_management_are_accepted(claude, thinking):
    message = claude.beta.messages.create(
        model=MODEL,
        max_tokens=1,
        messages=[user("Hi")],
        thinking=thinking,
        output_config={"effort": "medium"},
        context_management={
            "edits": [
                {"type": "clear_thinking_20251015", "keep": "all"},
                {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 150000}},
            ]
        },
        betas=BETAS,
        extra_body={**GREEDY, "a_field_from_the_future": {"x": 1}},
    )
    assert message.stop_reason == "max_tokens" and message.content[0].type == "text"
    assert message.context_management is not None and message.context_management.applied_edits == []


def test_blocks_only_anthropics_servers_produce_are_skipped(claude):
    answer = {"type": "text", "text": "The forecast says sun."}
    searched = [
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "web_search",
            "input": {"query": "weather"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://example.com",
                    "title": "Sun",
                    "encrypted_content": "e30=",
                }
            ],
        },
        {"type": "thinking", "thinking": "Search first.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
    ]
    plain = [user("Weather?"), {"role": "assistant", "content": [answer]}, user("Thanks.")]
    with_server_blocks = [plain[0], {"role": "assistant", "content": [*searched, answer]}, plain[2]]
    assert counted(claude, with_server_blocks) == counted(claude, plain)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (
            [user("Hi"), {"role": "assistant", "content": [{"type": "foo"}]}, user("Bye")],
            "messages.1.content.0.type: unknown content block type 'foo'",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "bar"}]}
                    ],
                }
            ],
            "messages.0.content.0.content.0.type: unknown content block type 'bar'",
        ),
        (
            [
                user("Hi"),
                {
                    "role": "system",
                    "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}],
                },
            ],
            "messages.1.content.0.type: 'tool_use' blocks are not allowed in a system message",
        ),
    ],
)
def test_a_block_type_unknown_or_out_of_place_is_a_400_naming_where(claude, messages, error):
    with pytest.raises(anthropic.BadRequestError) as failure:
        claude.beta.messages.create(model=MODEL, max_tokens=1, messages=messages, betas=BETAS)
    assert failure.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": error},
    }


def looked_up(cities: list[str]) -> list[dict]:
    """A conversation of one weather lookup per city, each with a long result."""
    messages = [user("Look up the weather.")]
    for index, city in enumerate(cities):
        call = {
            "type": "tool_use",
            "id": f"toolu_{index}",
            "name": "get_weather",
            "input": {"city": city},
        }
        result = f"{city}: " + "sunny and mild all day, " * 12
        messages += [
            {"role": "assistant", "content": [call]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{index}", "content": result}
                ],
            },
        ]
    return messages


def test_clear_tool_uses_replaces_older_results_with_a_placeholder(claude, server):
    history = looked_up(["Oslo", "Lima", "Pune"])
    sent = counted(claude, history)
    edited = claude.beta.messages.count_tokens(
        model=MODEL, messages=history, context_management={"edits": [CLEAR_OLDER]}, betas=BETAS
    )
    assert edited.context_management.original_input_tokens == sent > edited.input_tokens
    prompt, message = rendered_prompt(
        server,
        lambda: claude.beta.messages.create(
            model=MODEL,
            max_tokens=1,
            messages=history,
            context_management={"edits": [CLEAR_OLDER]},
            betas=BETAS,
            extra_body=GREEDY,
        ),
    )
    assert [edit.model_dump() for edit in message.context_management.applied_edits] == [
        {
            "type": "clear_tool_uses_20250919",
            "cleared_tool_uses": 2,
            "cleared_input_tokens": sent - edited.input_tokens,
        }
    ]
    assert prompt.count(CLEARED) == 2 and "Pune: sunny" in prompt
    assert "Oslo: sunny" not in prompt and "Lima: sunny" not in prompt
    inputs_too = {**CLEAR_OLDER, "clear_tool_inputs": True}
    assert (
        counted(claude, history, context_management={"edits": [inputs_too]}) < edited.input_tokens
    )
    by_length = {**CLEAR_OLDER, "trigger": {"type": "input_tokens", "value": sent}}
    assert (
        counted(claude, history, context_management={"edits": [by_length]}) == edited.input_tokens
    )


@pytest.mark.parametrize(
    "edit",
    [
        {**CLEAR_OLDER, "exclude_tools": ["get_weather"]},
        {**CLEAR_OLDER, "trigger": {"type": "tool_uses", "value": 4}},
        {**CLEAR_OLDER, "trigger": {"type": "input_tokens", "value": 100000}},
        {**CLEAR_OLDER, "clear_at_least": {"type": "input_tokens", "value": 100000}},
    ],
)
def test_clear_tool_uses_clears_nothing_it_should_not(claude, edit):
    history = looked_up(["Oslo", "Lima", "Pune"])
    edited = claude.beta.messages.count_tokens(
        model=MODEL, messages=history, context_management={"edits": [edit]}, betas=BETAS
    )
    assert edited.input_tokens == edited.context_management.original_input_tokens
    assert edited.input_tokens == counted(claude, history)
