"""MCP servers a request names cannot make mlxserve reach what only it can reach: real servers
(no model: every refusal comes before one is needed), real HTTP, and plain listening sockets
that must see no connection. Also: the operator's allowlist, redirects, both kinds of server in
one request, /api/v1/chat's `require_approval`, and error texts that let no client scan ports."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.mcp_server import SCRIPT, running, start_http
from tests.server import ServerProcess, free_port

KEY = "ssrf-test-key"
PRIVATE_HOSTS = ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.0.0.1"]


def mcp_config(folder) -> list[str]:
    """--mcp-config with the stdio test server as plugin mcp/calc."""
    calls = folder / "plugin-calls.jsonl"
    plugin = {"command": sys.executable, "args": [str(SCRIPT), "--calls", str(calls)]}
    config = folder / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"calc": plugin}}))
    return ["--mcp-config", str(config)]


@pytest.fixture(scope="module")
def mcp_http(tmp_path_factory):
    """The test MCP server over streamable HTTP on 127.0.0.1: its URL."""
    port = free_port()
    process = start_http(tmp_path_factory.mktemp("ssrf-http") / "calls.jsonl", port)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def serve(folder, *args: str) -> ServerProcess:
    base = ["--allow-request-mcp", "--api-key", KEY, *mcp_config(folder), *args]
    server = ServerProcess(folder, model="nobody/missing", engine="llamacpp", extra_args=base)
    server.plugin_calls = folder / "plugin-calls.jsonl"
    return server.start(wait_for_model=False)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Requests' servers allowed, on public addresses only."""
    with serve(tmp_path_factory.mktemp("guarded")) as server:
        yield server


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """127.0.0.1 allowlisted, and both kinds of server allowed in one request."""
    args = ("--mcp-allowed-hosts", "127.0.0.1", "--allow-mixed-mcp")
    with serve(tmp_path_factory.mktemp("listed"), *args) as server:
        yield server


def post(server, path: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=120)


def responses(server, url: str) -> httpx.Response:
    tool = {"type": "mcp", "server_label": "calc", "server_url": url, "require_approval": "never"}
    return post(server, "/v1/responses", {"model": "any", "input": "Hi", "tools": [tool]})


def chat(server, *integrations) -> httpx.Response:
    body = {"model": "any", "input": "Hi", "integrations": list(integrations)}
    return post(server, "/api/v1/chat", body)


def ephemeral(url: str) -> dict:
    return {"type": "ephemeral_mcp", "server_label": "calc", "server_url": url}


@contextlib.contextmanager
def listeners(port: int = 0) -> Iterator[tuple[int, list[socket.socket]]]:
    """Plain TCP sockets listening on one port of 127.0.0.1 and, where the machine has IPv6,
    ::1; a connection to either is completed by the kernel, so accepted() finds it."""
    first = socket.socket()
    first.bind(("127.0.0.1", port))
    port, sockets = first.getsockname()[1], [first]
    with contextlib.suppress(OSError):
        second = socket.socket(socket.AF_INET6)
        second.bind(("::1", port))
        sockets.append(second)
    for sock in sockets:
        sock.listen(8)
        sock.setblocking(False)
    try:
        yield port, sockets
    finally:
        for sock in sockets:
            sock.close()


def accepted(sockets: list[socket.socket]) -> int:
    count = 0
    for sock in sockets:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.accept()[0].close()
                count += 1
    return count


def refused_host(response: httpx.Response, param: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "mcp_host_not_allowed"
    assert error["param"] == param and "--mcp-allowed-hosts" in error["message"]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_a_server_on_a_non_public_address_is_refused_before_any_connection(guarded, host):
    with listeners() as (port, sockets):
        url = f"http://{host}:{port}/mcp"
        refused_host(responses(guarded, url), "tools[0].server_url")
        refused_host(chat(guarded, ephemeral(url)), "integrations[0].server_url")
        assert accepted(sockets) == 0


def test_the_allowlist_lets_a_listed_host_be_used_and_no_other(guarded, listed, mcp_http):
    refused_host(responses(guarded, mcp_http), "tools[0].server_url")
    # Listed: its tools are listed, and the request goes on to find no model.
    for response in (responses(listed, mcp_http), chat(listed, ephemeral(mcp_http))):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_not_found"
    # The name is not listed, although it resolves to the listed address.
    named = mcp_http.replace("127.0.0.1", "localhost")
    refused_host(responses(listed, named), "tools[0].server_url")


class Answering(BaseHTTPRequestHandler):
    """Answers every request with the server's `status` and `headers`, and counts them."""

    def answer(self) -> None:
        self.server.requests += 1
        self.send_response(self.server.status)
        for name, value in self.server.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = answer

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(status: int, headers: dict | None = None) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    server.status, server.headers, server.requests = status, headers or {}, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_to_a_loopback_address_is_not_followed(listed):
    with listeners() as (port, sockets):
        target = f"http://localhost:{port}/mcp"
        with http_server(307, {"Location": target}) as redirector:
            url = f"http://127.0.0.1:{redirector.server_address[1]}/mcp"
            for response in (responses(listed, url), chat(listed, ephemeral(url))):
                assert response.status_code == 424, response.text
                message = response.json()["error"]["message"]
                assert "localhost" not in message and str(port) not in message
            assert redirector.requests >= 2  # the listed server was asked
        assert accepted(sockets) == 0


@contextlib.contextmanager
def closing_listener() -> Iterator[int]:
    """A port that accepts connections and closes them at once."""
    with listeners() as (port, sockets):
        stop = threading.Event()

        def close_each() -> None:
            while not stop.wait(0.01):
                accepted(sockets)

        thread = threading.Thread(target=close_each, daemon=True)
        thread.start()
        try:
            yield port
        finally:
            stop.set()
            thread.join()


def test_servers_that_fail_differently_are_described_alike(listed):
    """Refused, reset, or answering HTTP that is not MCP: the same words, no address or port
    (else a client could scan ports through this server); details, without the URL's query
    string, go to the server log."""
    with closing_listener() as reset, http_server(404) as web:
        ports = {"refused": free_port(), "reset": reset, "web": web.server_address[1]}
        messages = {}
        for kind, port in ports.items():
            url = f"http://127.0.0.1:{port}/mcp?token=s3cret"
            response = responses(listed, url)
            assert response.status_code == 424, response.text
            error = response.json()["error"]
            assert error["code"] == "mcp_connection_error" and error["param"] == "tools[0]"
            messages[kind] = error["message"]
            assert str(port) not in messages[kind]
        assert web.requests >= 1
    assert len(set(messages.values())) == 1, messages
    assert "127.0.0.1" not in messages["web"] and "s3cret" not in messages["web"]
    log = listed.log_text()
    assert f"127.0.0.1:{ports['web']}/mcp" in log and "s3cret" not in log


def test_a_request_may_not_name_both_kinds_of_server_unless_allowed(guarded, listed, mcp_http):
    with listeners() as (port, sockets):
        response = chat(guarded, ephemeral(f"http://127.0.0.1:{port}/mcp"), "mcp/calc")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "integrations[1]" and error["code"] == "mixed_mcp_servers"
        assert "--allow-mixed-mcp" in error["message"]
        assert accepted(sockets) == 0
    assert running(str(guarded.plugin_calls)) == []  # nor was the plugin started
    remote = {**ephemeral(mcp_http), "server_label": "remote", "allowed_tools": ["add"]}
    plugin = {"type": "plugin", "id": "mcp/calc", "allowed_tools": ["multiply"]}
    response = chat(listed, remote, plugin)
    assert response.status_code == 404, response.text  # both used, then no model


def test_chat_refuses_integrations_that_ask_for_approval(guarded):
    for integration in (
        {"type": "plugin", "id": "mcp/calc", "require_approval": "always"},
        {**ephemeral("https://example.com/mcp"), "require_approval": {"always": {}}},
    ):
        response = chat(guarded, integration)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "integrations[0].require_approval"
        assert error["code"] == "approval_not_supported" and "/v1/responses" in error["message"]
    assert running(str(guarded.plugin_calls)) == []
