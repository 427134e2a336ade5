"""What the real agent CLIs send, replayed: Codex 0.171 (/v1/responses) and Claude Code 2.1
(/v1/messages), two turns each, recorded by scripts/agents.sh --record against a default server
(scrubbed of ids), sent again to both engines with a short reply. Each is answered 200 with a
stream every event of which the family's SDK types accept, and the second turn reads the
first's prompt from the cache. The server runs a tiny Gemma 3 with the default model's
vocabulary and template: the same prompts, read in seconds where Gemma 270M takes a minute."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from anthropic.types.beta import BetaRawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

RECORDED = Path(__file__).parent / "data" / "agents"
CONVERSATIONS = {
    "codex": ["codex_turn1.json", "codex_turn2.json"],
    "claude_code": ["claude_code_turn1.json", "claude_code_turn2.json"],
}
REPLY_TOKENS = 8
ANTHROPIC_EVENTS = TypeAdapter(BetaRawMessageStreamEvent)
RESPONSES_EVENTS = TypeAdapter(ResponseStreamEvent)


def replay(base_url: str, name: str) -> tuple[str, list[dict]]:
    """The recorded request, as sent, with a short reply; its status and stream events."""
    recorded = json.loads((RECORDED / name).read_text())
    body, path = recorded["body"], recorded["path"]
    limit = "max_tokens" if path == "/v1/messages" else "max_output_tokens"
    body = {**body, limit: REPLY_TOKENS}
    url = f"{base_url}{path}"
    headers = recorded["headers"]
    events = []
    with httpx.stream(
        "POST", url, params=recorded["query"], headers=headers, json=body, timeout=900
    ) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return path, events


def check_messages_stream(events: list[dict]) -> dict:
    """Every event an Anthropic stream event; returns the usage the stream ended with."""
    # `ping` keeps a connection warm; the SDK skips it, as it is no message event.
    parsed = [ANTHROPIC_EVENTS.validate_python(e) for e in events if e["type"] != "ping"]
    assert parsed[0].type == "message_start" and parsed[-1].type == "message_stop"
    final = next(event for event in reversed(parsed) if event.type == "message_delta")
    assert final.delta.stop_reason in ("end_turn", "max_tokens", "tool_use", "stop_sequence")
    usage = final.usage  # the counts once the prompt was read (message_start's come before)
    return {"cached": usage.cache_read_input_tokens or 0, "fresh": usage.input_tokens}


def check_responses_stream(events: list[dict]) -> dict:
    """Every event a Responses stream event, ending with the whole response."""
    parsed = [RESPONSES_EVENTS.validate_python(event) for event in events]
    assert parsed[0].type == "response.created"
    assert parsed[-1].type in ("response.completed", "response.incomplete")
    response = Response.model_validate(events[-1]["response"])
    assert response.output and response.usage.output_tokens <= REPLY_TOKENS
    details = response.usage.input_tokens_details
    return {
        "cached": details.cached_tokens,
        "fresh": response.usage.input_tokens - details.cached_tokens,
    }


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_recorded_agent_turns_are_answered(server, conversation):
    usages = []
    for name in CONVERSATIONS[conversation]:
        path, events = replay(server.base_url, name)
        check = check_messages_stream if path == "/v1/messages" else check_responses_stream
        usages.append(check(events))
    first, second = usages
    assert first["fresh"] > 5000  # the system prompt and tool schemas of an agent
    # The second turn repeats the first as its prefix: almost all of it comes from the cache.
    assert second["cached"] > 0.9 * (first["fresh"] + first["cached"]), usages
