"""/v1/responses as Codex uses it, through the official SDK on both engines: its request fields,
namespace, custom and built-in tools, forced custom and namespaced calls (streamed too), stateless
turns (`store: false`) that carry reasoning, calls and outputs back, and item references."""

from __future__ import annotations

import base64
import json
import re

import httpx
import openai
import pytest
from openai.types.responses import Response

from mlxserve.api.responses.custom import StreamedInput, input_mismatch
from mlxserve.api.responses.items import item_turns
from mlxserve.api.responses.tools import ToolSet
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ImagePart, TextPart, Turn
from tests.test_reasoning import ASK
from tests.test_responses import STREAM_EVENTS
from tests.thinking_models import THINKER_ID


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


TICKET = {
    "type": "custom",
    "name": "ticket",
    "description": "File a ticket by its code.",
    "format": {"type": "grammar", "syntax": "regex", "definition": "[A-Z]{2}-[0-9]{3}"},
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: "*** Begin Patch" LF line+ "*** End Patch"\n'
        "line: /[+ -].*/ LF\n%import common.LF\n",
    },
}
AGENTS = {
    "type": "namespace",
    "name": "agents",
    "description": "Tools for sub-agents.",
    "tools": [
        {
            "type": "function",
            "name": "list_agents",
            "description": "List the running agents.",
            "strict": False,
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
        {"type": "custom", "name": "note", "format": {"type": "text"}},
    ],
}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}},
        "required": ["cmd"],
        "additionalProperties": False,
    },
}
TOOLS = [EXEC, AGENTS, TICKET, PATCH, {"type": "web_search", "external_web_access": False}]
CODEX_FIELDS = {
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "prompt_cache_key": "thread-1",
    "reasoning": {"summary": "auto"},
    "parallel_tool_calls": False,
    "tool_choice": "auto",
    "safety_identifier": "user-hash",
    "user": "someone",
    "service_tier": "auto",
    "truncation": "auto",
    "top_logprobs": 0,
    "max_tool_calls": 8,
    "background": False,
    "prompt_cache_retention": "24h",
    "stream_options": {"include_obfuscation": False},
}
GO = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go."}]}]


def test_codex_shaped_request_is_answered_and_echoed(client, server, model_id):
    logged = len(server.log_text())
    response = client.responses.create(
        model=model_id,
        input=GO,
        tools=TOOLS,
        max_output_tokens=2,
        temperature=0,
        extra_body={"client_metadata": {"turn_id": "t1"}},
        **CODEX_FIELDS,
    )
    Response.model_validate(response.to_dict())
    assert response.store is False and response.prompt_cache_key == "thread-1"
    assert response.safety_identifier == "user-hash" and response.user == "someone"
    assert response.truncation == "auto" and response.service_tier == "default"
    assert response.top_logprobs == 0 and response.max_tool_calls == 8
    assert response.reasoning.summary == "auto" and response.background is False
    assert [tool.type for tool in response.tools] == [t["type"] for t in TOOLS]
    assert response.tools[1].tools[0].name == "list_agents"
    assert "ignoring unsupported fields" not in server.log_text()[logged:]
    assert server.log_text().count("'web_search' tools are built into") == 1  # once a process
    # The namespace's and the custom tools' definitions reach the prompt; web_search does not.
    bare = [EXEC, {"type": "web_search"}]
    fewer = client.responses.create(model=model_id, input=GO, tools=bare, max_output_tokens=1)
    assert response.usage.input_tokens > fewer.usage.input_tokens + 60


def test_forced_custom_tool_call_is_a_custom_tool_call_item(client, model_id):
    kwargs = {
        "model": model_id,
        "input": GO,
        "tools": TOOLS,
        "tool_choice": {"type": "custom", "name": "ticket"},
        "parallel_tool_calls": False,
        "max_output_tokens": 40,
        "temperature": 0,
    }
    call = client.responses.create(**kwargs).output[0]
    assert call.type == "custom_tool_call" and call.name == "ticket" and call.call_id
    assert re.fullmatch(
        "[A-Z]{2}-[0-9]{3}", call.input
    )  # a regex format is enforced while sampling
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    for event in events:
        STREAM_EVENTS.validate_python(event.to_dict())
    kinds = [event.type for event in events]
    assert kinds[2] == "response.output_item.added" and events[2].item.type == "custom_tool_call"
    assert "response.function_call_arguments.delta" not in kinds
    deltas = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
    done = next(e for e in events if e.type == "response.custom_tool_call_input.done")
    assert "".join(deltas) == done.input == final.output[0].input
    assert re.fullmatch("[A-Z]{2}-[0-9]{3}", done.input)
    assert kinds.index("response.custom_tool_call_input.done") < kinds.index(
        "response.output_item.done"
    )


def test_custom_input_off_its_lark_grammar_is_logged(client, server, model_id):
    logged = len(server.log_text())
    response = client.responses.create(
        model=model_id,
        input=GO,
        tools=[PATCH],
        tool_choice={"type": "custom", "name": "apply_patch"},
        max_output_tokens=40,  # too few for a whole patch
    )
    assert response.output[0].type == "custom_tool_call"
    assert "'apply_patch': input does not match its grammar" in server.log_text()[logged:]


def test_forced_namespaced_call_names_its_namespace(client, model_id):
    for choice in (
        {"type": "function", "name": "agents.list_agents"},
        {"type": "function", "name": "list_agents", "namespace": "agents"},
    ):
        response = client.responses.create(
            model=model_id,
            input=GO,
            tools=TOOLS,
            tool_choice=choice,
            parallel_tool_calls=False,
            max_output_tokens=40,
            temperature=0,
        )
        call = response.output[0]
        assert call.type == "function_call" and call.name == "list_agents"
        assert call.namespace == "agents" and json.loads(call.arguments) == {}
    note = client.responses.create(
        model=model_id,
        input=GO,
        tools=TOOLS,
        tool_choice={"type": "custom", "name": "agents.note"},
        max_output_tokens=30,
    ).output[0]
    assert note.type == "custom_tool_call" and (note.namespace, note.name) == ("agents", "note")


def test_store_false_is_not_kept(client, model_id):
    kept = client.responses.create(model=model_id, input="Hi", max_output_tokens=1)
    unkept = client.responses.create(model=model_id, input="Hi", max_output_tokens=1, store=False)
    follow = {"model": model_id, "input": "And?", "max_output_tokens": 1}
    assert client.responses.create(previous_response_id=kept.id, **follow).status
    with pytest.raises(openai.NotFoundError):
        client.responses.create(previous_response_id=unkept.id, **follow)


def history(reasoning: dict | None = None) -> list[dict]:
    """A stateless second turn as Codex sends it: the first turn's items, then the outputs."""
    items = [
        {"type": "message", "id": "msg_1", "status": "completed", **GO[0]},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "list_agents",
            "namespace": "agents",
            "arguments": "{}",
        },
        {"type": "custom_tool_call", "call_id": "c2", "name": "ticket", "input": "AB-123"},
        {"type": "function_call_output", "call_id": "c1", "output": "no agents running"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "filed"},
    ]
    return ([reasoning] if reasoning else []) + items


def test_second_turn_carries_calls_outputs_and_reasoning_back(client, model_id):
    thought = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Call the tools."}],
        "encrypted_content": base64.b64encode(b"Call the tools.").decode(),
    }
    kwargs = {"model": model_id, "tools": TOOLS, "max_output_tokens": 1, "store": False}
    with_reasoning = client.responses.create(input=history(thought), **kwargs)
    without = client.responses.create(input=history(), **kwargs)
    alone = client.responses.create(input=GO, **kwargs)
    # The calls and their outputs are in the prompt; earlier reasoning is not shown again.
    assert without.usage.input_tokens > alone.usage.input_tokens + 15
    assert with_reasoning.usage.input_tokens == without.usage.input_tokens


def test_item_references_resolve_to_stored_items(client, server, model_id):
    first = client.responses.create(model=model_id, input=GO, max_output_tokens=2, temperature=0)
    reply = {"type": "item_reference", "id": first.output[0].id}
    asked = {"type": "item_reference", "id": "msg_asked"}
    stored = client.responses.create(
        model=model_id,
        input=[{**GO[0], "id": "msg_asked"}],
        max_output_tokens=1,
    )
    again = client.responses.create(model=model_id, input=[asked, reply], max_output_tokens=1)
    assert again.usage.input_tokens > stored.usage.input_tokens
    missing = httpx.post(
        f"{server.base_url}/v1/responses",
        json={"model": model_id, "input": [*GO, {"type": "item_reference", "id": "msg_none"}]},
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input[1].id"


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"input": [*GO, {"type": "mystery_call"}]}, 400, "input[1].type"),
        ({"tools": [EXEC, {"type": "teleport"}]}, 400, "tools[1].type"),
        (
            {"tools": [{**PATCH, "format": {**PATCH["format"], "definition": "start: nope"}}]},
            400,
            "tools[0].format.definition",
        ),
        (
            {"tools": [TICKET], "tool_choice": {"type": "custom", "name": "whisper"}},
            400,
            "tool_choice",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "web_search_preview"}}, 400, "tool_choice"),
        ({"background": True}, 422, "background"),
        ({"include": ["reasoning.everything"]}, 422, "include.0"),
    ],
)
def test_bad_codex_fields_name_the_field(server, model_id, change, status, param):
    body = {"model": model_id, "input": GO, "max_output_tokens": 1, **change}
    reply = httpx.post(f"{server.base_url}/v1/responses", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["param"] == param


def test_reasoning_summary_and_encrypted_content_round_trip(thinking_server):
    client = openai.OpenAI(base_url=f"{thinking_server.base_url}/v1", api_key="x", max_retries=0)
    kwargs = {
        "model": THINKER_ID,
        "max_output_tokens": 12,
        "temperature": 0,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"},
    }
    item = client.responses.create(input=ASK, **kwargs).output[0]
    text = item.content[0].text
    assert item.type == "reasoning" and text
    assert [part.text for part in item.summary] == [text]
    assert base64.b64decode(item.encrypted_content).decode() == text
    events = list(client.responses.create(input=ASK, stream=True, **kwargs))
    for event in events:
        STREAM_EVENTS.validate_python(event.to_dict())
    summary = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(summary) == text
    kinds = [e.type for e in events]
    assert kinds.count("response.reasoning_summary_part.added") == 1
    assert kinds.count("response.reasoning_summary_part.done") == 1
    # Sent back on a stateless turn, the item is accepted and not shown to the model again.
    returned = {key: value for key, value in item.to_dict().items() if key != "content"}
    turn = [*ASK, returned, {"role": "user", "content": "More."}]
    plain = [*ASK, {"role": "user", "content": "More."}]
    again = client.responses.create(input=turn, **{**kwargs, "max_output_tokens": 1})
    assert (
        again.usage.input_tokens
        == client.responses.create(
            input=plain, **{**kwargs, "max_output_tokens": 1}
        ).usage.input_tokens
    )
    plain_turn = client.responses.create(input=ASK, **{**kwargs, "include": []}).output[0]
    assert plain_turn.encrypted_content is None


def test_custom_input_is_decoded_as_its_arguments_arrive():
    text = 'line "one"\n\ttab \\ é 😀 end'
    arguments = json.dumps({"input": text})  # escapes for the quote, newline and emoji
    for size in range(1, 8):
        streamed = StreamedInput()
        pieces = [arguments[i : i + size] for i in range(0, len(arguments), size)]
        assert "".join(streamed.feed(piece) for piece in pieces) == text
        assert streamed.finish() == text
    cut = StreamedInput()
    cut.feed(arguments[:13])
    assert cut.finish() == text[:2]  # arguments cut short: the input as far as it arrived


def test_custom_input_is_checked_against_its_grammar():
    assert input_mismatch(TICKET, "XY-042") is None
    assert input_mismatch(TICKET, "XY-0421") and input_mismatch(TICKET, "xy-042")
    patch = "*** Begin Patch\n+added\n-removed\n*** End Patch"
    assert input_mismatch(PATCH, patch) is None
    assert "fails parse" in input_mismatch(PATCH, patch.replace("+added", "added"))
    assert input_mismatch(PATCH, patch[:-5]) == "the input ends before the grammar allows"
    assert input_mismatch({"type": "custom", "name": "free"}, "anything") is None


def test_items_become_the_turns_a_chat_template_expects():
    items = [
        *history(),
        {
            "type": "function_call_output",
            "call_id": "c3",
            "output": [
                {"type": "input_text", "text": "part one, "},
                {"type": "input_text", "text": "part two"},
            ],
        },
    ]
    turns = item_turns([{"role": "assistant", "content": "Checking."}, *items[1:3]], lambda _: None)
    assert [turn.role for turn in turns] == ["assistant"]  # the calls join the text they follow
    listed, filed = turns[0].tool_calls
    assert (listed.name, listed.arguments) == ("agents.list_agents", "{}")
    assert (filed.name, json.loads(filed.arguments)) == ("ticket", {"input": "AB-123"})
    results = item_turns(items[3:], lambda _: None)
    assert [(t.role, t.text) for t in results] == [
        ("tool", "no agents running"),
        ("tool", "filed"),
        ("tool", "part one, part two"),
    ]


def test_allowed_tools_narrow_what_is_offered():
    tools = ToolSet(TOOLS)
    choice, forced, offered = tools.choose(
        {
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "custom", "name": "ticket"}, {"type": "web_search"}],
        }
    )
    assert (choice, forced) == ("required", None)
    assert [tool["function"]["name"] for tool in offered] == ["ticket"]
    every = [tool["function"]["name"] for tool in tools.choose("auto")[2]]
    assert every == ["exec_command", "agents.list_agents", "agents.note", "ticket", "apply_patch"]


def test_stored_conversations_are_bounded_in_bytes():
    """A store of long conversations (or images' data URLs) forgets the oldest by size, not
    only by count, and the newest is always kept."""
    store = ConversationStore(capacity=100, max_bytes=1_000)
    for number in range(3):
        store.put(f"resp_{number}", [Turn("user", [TextPart("x" * 400)])])
    with pytest.raises(RequestError):
        store.conversation("resp_0")
    assert store.conversation("resp_2")[0].text == "x" * 400
    assert 800 <= store.bytes <= 1_000
    store.put("resp_big", [Turn("user", [ImagePart("data:image/png;base64," + "A" * 5_000)])])
    assert store.conversation("resp_big") and store.bytes > 1_000  # alone, it stays
    with pytest.raises(RequestError):
        store.conversation("resp_2")
