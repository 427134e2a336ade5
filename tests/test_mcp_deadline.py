"""--request-timeout holds for a request's MCP waits too: reaching its servers and the calls
made between rounds end at the request's deadline with a 504, not at the MCP time limits
(30 s to connect, 120 s a call). The tiny Gemma serves: no round is generated."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from tests.mcp_server import recorded_calls, start_http
from tests.server import ServerProcess, free_port
from tests.tiny_models import make_tiny_gemma

KEY = "mcp-deadline-key"
LIMIT = 2  # seconds: --request-timeout
WITHIN = LIMIT + 2  # a 504 sooner than this came from the deadline, not an MCP time limit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcp-deadline")
    tiny = make_tiny_gemma(folder / "test" / "tiny-gemma")
    args = ["--allow-request-mcp", "--mcp-allowed-hosts", "127.0.0.1", "--api-key", KEY]
    args += ["--request-timeout", str(LIMIT)]
    with ServerProcess(folder, model=tiny.id, engine="mlx", extra_args=args) as running:
        running.model = tiny.id
        yield running


@pytest.fixture(scope="module")
def silent_url():
    """An MCP URL whose socket accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0)


def timed_504(make_request) -> float:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        make_request()
    assert failed.value.status_code == 504, failed.value.body
    assert failed.value.body["code"] == "request_timeout"
    return time.monotonic() - started


def test_a_server_that_never_answers_ends_at_the_deadline(server, silent_url):
    tool = {"type": "mcp", "server_label": "calc", "server_url": silent_url}
    seconds = timed_504(
        lambda: client(server).responses.create(model=server.model, input="Hi", tools=[tool])
    )
    assert LIMIT <= seconds < WITHIN
    integration = {"type": "ephemeral_mcp", "server_label": "calc", "server_url": silent_url}
    started = time.monotonic()
    response = httpx.post(
        f"{server.base_url}/api/v1/chat",
        json={"model": server.model, "input": "Hi", "integrations": [integration]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert response.status_code == 504 and LIMIT <= time.monotonic() - started < WITHIN
    assert response.json()["error"]["code"] == "request_timeout"


def test_a_call_longer_than_the_limit_ends_at_the_deadline(server, tmp_path):
    calls, port = tmp_path / "calls.jsonl", free_port()
    mcp = start_http(calls, port)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        tool = {"type": "mcp", "server_label": "calc", "server_url": url}
        # The client approves a call it was asked about: it runs before the first round.
        asked = {
            "type": "mcp_approval_request",
            "id": "mcpr_slow",
            "server_label": "calc",
            "name": "wait",
            "arguments": '{"seconds": 10}',
        }
        approval = {"type": "mcp_approval_response", "approve": True}
        items = [{"role": "user", "content": "Hi"}, asked]
        items.append({**approval, "approval_request_id": "mcpr_slow"})
        seconds = timed_504(
            lambda: client(server).responses.create(
                model=server.model, input=items, tools=[tool], max_output_tokens=2
            )
        )
    finally:
        mcp.terminate()
        mcp.wait(10)
    assert recorded_calls(calls) == [{"tool": "wait", "arguments": {"seconds": 10}}]
    assert LIMIT <= seconds < WITHIN
