"""Malformed nested shapes are a 4xx that names the field, never a 500; and a 500 tells the
client an id, not the exception's text (the server's log has it under that id)."""

from __future__ import annotations

import logging

import httpx
import pytest

from mlxserve.api.http.errors import from_exception


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


ASK = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CASES = [
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"function": "x"}]}]}, "messages"),
    ({"messages": ASK, "tools": [TOOL], "tool_choice": {"type": "function", "function": "f"}},
     "tool_choice"),
    ({"messages": ASK, "tools": [{"function": "f"}]}, "tools"),
    ({"messages": ASK, "tools": ["f"]}, "tools"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": "x"}]}, "messages"),
    ({"messages": ASK, "tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), CASES)
def test_malformed_nested_shapes_are_4xx_naming_the_field(server, model_id, body, field):
    reply = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model_id, "max_tokens": 2, **body},
        timeout=60,
    )
    assert reply.status_code in (400, 422), reply.text
    assert reply.json()["error"]["param"].startswith(field), reply.text


def test_a_500_names_an_id_and_keeps_internals_in_the_log(caplog):
    with caplog.at_level(logging.ERROR):
        error = from_exception(RuntimeError("cannot open /home/someone/secret.key"))
    assert error.status == 500 and "secret" not in str(error)
    error_id = str(error).split()[2].rstrip(";")
    assert error_id.startswith("err_") and error_id in caplog.text and "secret.key" in caplog.text
