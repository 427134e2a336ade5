"""A model's tool-call family: found from its template, shown by /api/v0/models/{id}, and
overridden per load (`tool_format`, as `mlxserve load --tool-format` sends it), which then
decides the syntax tools are constrained to."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 9}},
                "required": ["days"],
                "additionalProperties": False,
            },
        },
    }
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("tool-format")
    make_tiny_gemma(models / "test" / "tiny", bytes_vocabulary=True, architecture="qwen2")
    with ServerProcess(models, model="test/tiny", engine="mlx") as running:
        yield running


def forced_call(server, model: str) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "go"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 1.0,
        "seed": 3,
        "max_tokens": 120,
    }
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


def test_the_family_found_and_a_load_that_names_another(server):
    base = server.base_url
    assert forced_call(server, "test/tiny")["finish_reason"] == "tool_calls"
    shown = httpx.get(f"{base}/api/v0/models/test/tiny", timeout=30).json()
    assert shown["tool_format"] == "hermes"  # Qwen 2's architecture, no template markers
    loaded = httpx.post(
        f"{base}/api/v0/models/load",
        json={"model": "test/tiny", "identifier": "tiny-glm", "tool_format": "glm47"},
        timeout=120,
    )
    assert loaded.status_code == 200, loaded.text
    assert httpx.get(f"{base}/api/v0/models/tiny-glm", timeout=30).json()["tool_format"] == "glm47"
    choice = forced_call(server, "tiny-glm")
    (call,) = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and call["function"]["name"] == "get_weather"
    assert 1 <= json.loads(call["function"]["arguments"])["days"] <= 9


def test_an_unknown_tool_format_is_refused_with_the_field_named(server):
    reply = httpx.post(
        f"{server.base_url}/api/v0/models/load",
        json={"model": "test/tiny", "identifier": "x", "tool_format": "klingon"},
        timeout=60,
    )
    assert reply.status_code in (400, 422)
    error = reply.json()["error"]
    assert error["param"] == "tool_format" and "klingon" in error["message"]
