"""Every family's call grammar on the llama.cpp engine: Gemma 3's tiny random-weight twin (its
real vocabulary and template), loaded under another identifier with each family's
`tool_format` (sharing the server's llama.cpp child), makes forced calls at
temperature 1.0 in that family's syntax, which the child's own llguidance enforces and the
output stage reads back: the arguments validate, and the reply ends with its calls."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from mlxserve.families.syntax import SYNTAXES

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "get_forecast", "parameters": SCHEMA}}]
# DeepSeek's markers hold "▁", which Gemma's SentencePiece vocabulary only writes as a space:
# no text can spell them there (DeepSeek's own GGUFs hold them as single tokens).
FAMILIES = sorted(set(SYNTAXES) - {"deepseek"})


@pytest.mark.parametrize("twin_server", ["llamacpp"], indirect=True)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_forced_call_in_each_family_syntax_validates_and_ends(twin_server, twin_ids, family):
    base, identifier = twin_server.base_url, f"gemma-{family}"
    # The server's own load of the twin, under another identifier: its llama.cpp child serves both
    load = {"model": twin_ids["llamacpp"], "identifier": identifier, "tool_format": family}
    loaded = httpx.post(f"{base}/api/v0/models/load", json=load, timeout=120)
    assert loaded.status_code == 200, loaded.text
    try:
        body = {
            "model": identifier,
            "messages": [{"role": "user", "content": "Forecast for Paris?"}],
            "tools": TOOLS,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 1.0,
            "seed": 0,
            "max_tokens": 160,
        }
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_forecast"
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMA)
    finally:
        httpx.post(f"{base}/api/v0/models/unload", json={"identifier": identifier}, timeout=60)
