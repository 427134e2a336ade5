"""The MCP client side without a model: mcp.json files, connections to a real MCP server
(tests/mcp_server.py, over stdio and streamable HTTP), their failures and limits, the servers a
request may use, and the tool filters of /v1/responses' `mcp` tools."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from mcp.types import Tool, ToolAnnotations

from mlxserve.api.responses.items import item_turns
from mlxserve.api.responses.mcp import _allowed, _approval, approved_calls
from mlxserve.mcp.pool import McpConfigError, McpServers, McpSettings, mcp_settings
from mlxserve.mcp.servers import (
    MAX_OUTPUT_CHARS,
    Connection,
    McpServerError,
    ServerSpec,
    capped,
)
from mlxserve.mcp.tools import McpTool, McpToolbox
from mlxserve.net.hosts import HostNotAllowed, HostPolicy, is_public
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ToolCallPart, ToolResultPart
from mlxserve.redact import scrub
from tests.mcp_server import SCRIPT, recorded_calls, running, start_http
from tests.server import free_port


def stdio_spec(calls: Path, label: str = "calc") -> ServerSpec:
    return ServerSpec(label, command=sys.executable, args=(str(SCRIPT), "--calls", str(calls)))


def test_mcp_json_in_cursors_format_is_read(tmp_path):
    path = tmp_path / "mcp.json"
    servers = {
        "calc": {"command": "python", "args": ["server.py"], "env": {"TOKEN": "secret"}},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer x"}},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    settings = mcp_settings(False, str(path), api_key=True)
    calc, remote = settings.plugins["calc"], settings.plugins["remote"]
    assert (calc.command, calc.args, calc.env) == ("python", ("server.py",), {"TOKEN": "secret"})
    assert (remote.url, remote.headers) == (
        "https://example.com/mcp",
        {"Authorization": "Bearer x"},
    )
    assert "secret" not in repr(calc) and "Bearer" not in repr(remote)  # never logged
    assert settings.config_path == path and settings.api_key_set


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "cannot read"),
        ('{"servers": {}}', "'mcpServers'"),
        ('{"mcpServers": {"x": {"args": []}}}', "mcpServers.x: needs a 'command'"),
        ('{"mcpServers": {"x": {"command": "a", "args": [1]}}}', "'args' must be strings"),
    ],
)
def test_a_broken_mcp_json_is_refused_with_where(tmp_path, text, complaint):
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(McpConfigError, match=complaint):
        mcp_settings(False, str(path), api_key=True)


def test_mcp_config_alone_reads_mlxserve_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXSERVE_HOME", str(tmp_path))
    (tmp_path / "mcp.json").write_text('{"mcpServers": {"calc": {"url": "http://h/mcp"}}}')
    assert mcp_settings(False, "", api_key=True).config_path == tmp_path / "mcp.json"
    with pytest.raises(McpConfigError, match="cannot read"):
        mcp_settings(False, str(tmp_path / "missing.json"), api_key=True)


def test_which_servers_a_request_may_use_follows_the_flags():
    off = McpServers()
    with pytest.raises(RequestError, match="--allow-request-mcp") as refused:
        off.check_request_servers("tools[0]")
    assert refused.value.status == 403 and refused.value.param == "tools[0]"
    with pytest.raises(RequestError, match="--mcp-config"):
        off.plugin_spec("mcp/calc", "integrations[0]")
    spec = ServerSpec("calc", url="http://h/mcp")
    keyless = McpServers(McpSettings(plugins={"calc": spec}, api_key_set=False))
    with pytest.raises(RequestError, match="--api-key") as refused:
        keyless.plugin_spec("mcp/calc", "integrations[0]")
    assert refused.value.status == 403
    allowed = McpServers(McpSettings(True, {"calc": spec}, Path("mcp.json"), api_key_set=True))
    allowed.check_request_servers("tools[0]")
    assert allowed.plugin_spec("mcp/calc", "integrations[0]") is spec
    with pytest.raises(RequestError, match=r"no plugin 'mcp/other' \(configured: mcp/calc\)"):
        allowed.plugin_spec("mcp/other", "integrations[0]")


def test_a_stdio_server_is_listed_and_called_then_stopped(tmp_path):
    calls = tmp_path / "calls.jsonl"

    async def scenario():
        connection = Connection(stdio_spec(calls))
        await connection.open("integrations[0]", "plugin_connection_error")
        assert running(str(calls))  # started
        tools = await connection.list_tools("integrations[0]", "plugin_connection_error")
        added = await connection.call("add", {"a": 2, "b": 3})
        refused = await connection.call("add", {"a": 2, "b": 300})  # outside the schema
        await connection.close()
        return tools, added, refused

    tools, added, refused = asyncio.run(scenario())
    assert [tool.name for tool in tools] == ["add", "multiply", "wait"]
    assert added.output == "5" and added.error is None and added.text == "5"
    assert added.content == [{"type": "text", "text": "5"}]
    assert refused.output is None and refused.error["type"] == "mcp_tool_execution_error"
    assert refused.text.startswith("error: ") and "less than or equal to 99" in refused.text
    assert recorded_calls(calls) == [{"tool": "add", "arguments": {"a": 2, "b": 3}}]
    assert running(str(calls)) == []  # closed: the server process is gone


def test_a_call_past_its_time_limit_is_an_error_outcome(tmp_path):
    async def scenario():
        connection = Connection(stdio_spec(tmp_path / "calls.jsonl"), call_timeout=0.5)
        await connection.open(None, "plugin_connection_error")
        try:
            started = time.monotonic()
            outcome = await connection.call("wait", {"seconds": 5})
            return outcome, time.monotonic() - started
        finally:
            await connection.close()

    outcome, took = asyncio.run(scenario())
    assert outcome.error["type"] == "mcp_protocol_error" and outcome.error["code"] == -32001
    assert took < 3


def test_a_server_that_cannot_be_reached_or_started_is_a_424_naming_it(tmp_path):
    async def attempt(spec: ServerSpec) -> McpServerError:
        with pytest.raises(McpServerError) as failed:
            await Connection(spec).open("tools[1]", "mcp_connection_error")
        return failed.value

    port = free_port()
    closed = ServerSpec("gone", url=f"http://127.0.0.1:{port}/mcp", headers={"X-Key": "k9"})
    unreachable = asyncio.run(attempt(closed))
    assert unreachable.status == 424 and unreachable.param == "tools[1]"
    assert unreachable.code == "mcp_connection_error"
    assert "'gone'" in unreachable.message and "k9" not in unreachable.message
    assert str(port) not in unreachable.message and "127.0.0.1" not in unreachable.message
    missing = ServerSpec("gone", command=str(tmp_path / "no-such-program"))
    assert asyncio.run(attempt(missing)).message == unreachable.message  # the same words


def test_urls_in_logged_errors_lose_their_credentials_and_query():
    text = "Client error '404' for url 'http://me:pw@10.0.0.1:8080/mcp?token=s3cret#x'."
    assert scrub(text) == "Client error '404' for url 'http://10.0.0.1:8080/mcp?<redacted>'."


def test_only_public_addresses_pass_unless_the_host_is_listed():
    policy = HostPolicy.of(["127.0.0.1", "Intranet.Example."])
    assert asyncio.run(policy.addresses("127.0.0.1", 80)) == ["127.0.0.1"]
    assert policy.lists("intranet.example") and not policy.lists("localhost")
    for host in ("localhost", "::1", "10.1.2.3", "169.254.169.254", "fe80::1", "fc00::1"):
        with pytest.raises(HostNotAllowed):
            asyncio.run(policy.addresses(host, 80))
    public = ["8.8.8.8", "2606:4700::1111"]
    assert [asyncio.run(policy.addresses(host, 80)) for host in public] == [[a] for a in public]
    private = ["224.0.0.1", "0.0.0.0", "100.64.0.1", "::ffff:127.0.0.1", "2002:7f00:1::"]
    assert not any(is_public(ipaddress.ip_address(address)) for address in private)


def test_each_connection_of_a_requests_server_is_checked(tmp_path):
    """Past the request's own check (as a name that resolves elsewhere the next moment would
    be), the connection itself is refused: the listening socket sees nothing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        spec = ServerSpec("calc", url=f"http://127.0.0.1:{listener.getsockname()[1]}/mcp")

        async def attempt():
            with pytest.raises(McpServerError):
                await Connection(spec, hosts=HostPolicy()).open(None, "mcp_connection_error")

        asyncio.run(attempt())
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_request_headers_reach_an_http_server(tmp_path):
    port = free_port()
    process = start_http(tmp_path / "calls.jsonl", port)
    try:
        spec = ServerSpec("calc", url=f"http://127.0.0.1:{port}/mcp", headers={"X-Test": "1"})

        async def scenario():
            connection = Connection(spec)
            await connection.open(None, "mcp_connection_error")
            try:
                return await connection.call("multiply", {"a": 4, "b": 5})
            finally:
                await connection.close()

        assert asyncio.run(scenario()).output == "20"
    finally:
        process.terminate()
        process.wait(10)


def test_closing_the_pool_stops_kept_stdio_servers(tmp_path):
    calls = tmp_path / "calls.jsonl"
    spec = stdio_spec(calls)
    servers = McpServers(McpSettings(plugins={"calc": spec}, api_key_set=True))

    async def scenario():
        first = await servers.plugin(spec, "integrations[0]")
        again = await servers.plugin(spec, "integrations[0]")  # kept, not started again
        pids = running(str(calls))
        await servers.close()
        return first is again, pids

    same, pids = asyncio.run(scenario())
    assert same and len(pids) == 1
    assert running(str(calls)) == []


def test_long_tool_output_is_cut():
    text = "x" * (MAX_OUTPUT_CHARS + 10)
    assert capped(text).startswith("x" * MAX_OUTPUT_CHARS)
    assert capped(text).endswith("[... 10 more characters cut]")
    assert capped("short") == "short"


def tool(name: str, read_only: bool | None = None) -> Tool:
    hints = ToolAnnotations(read_only_hint=read_only) if read_only is not None else None
    return Tool(name=name, input_schema={"type": "object"}, annotations=hints)


def test_allowed_tools_and_require_approval_filters():
    by_name = _allowed(["add"], "tools[0].allowed_tools")
    assert by_name(tool("add")) and not by_name(tool("multiply"))
    reading = _allowed({"read_only": True}, "tools[0].allowed_tools")
    assert reading(tool("look", read_only=True)) and not reading(tool("write", read_only=False))
    assert _allowed(None, "tools[0].allowed_tools") is None
    assert _approval(None, "tools[0]")(tool("add"))  # OpenAI's default: always ask
    assert not _approval("never", "tools[0]")(tool("add"))
    mixed = _approval({"never": {"tool_names": ["add"]}}, "tools[0]")
    assert not mixed(tool("add")) and mixed(tool("multiply"))
    with pytest.raises(RequestError) as refused:
        _allowed("add", "tools[0].allowed_tools")
    assert refused.value.param == "tools[0].allowed_tools"


def test_mcp_items_in_a_history_are_the_calls_and_results_the_model_read():
    items = [
        {"role": "user", "content": "2 + 3?"},
        {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "calc", "tools": []},
        {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "calc", "name": "add"},
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
        {
            "type": "mcp_call",
            "id": "mcp_1",
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
            "output": "5",
            "server_label": "calc",
            "approval_request_id": "mcpr_1",
        },
        {
            "type": "mcp_call",
            "id": "mcp_2",
            "name": "add",
            "arguments": "{}",
            "output": None,
            "error": {"type": "mcp_protocol_error", "code": -32001, "message": "too slow"},
        },
    ]
    turns = item_turns(items, lambda _: None)
    assert [turn.role for turn in turns] == ["user", "assistant", "tool", "assistant", "tool"]
    assert turns[1].tool_calls == [ToolCallPart("mcp_1", "add", '{"a": 2, "b": 3}')]
    assert turns[2].parts == [ToolResultPart("mcp_1", "5")]
    assert turns[4].parts == [ToolResultPart("mcp_2", "error: too slow")]


def test_an_approval_runs_its_call_once_even_when_the_history_is_sent_again():
    toolbox = McpToolbox(McpServers())
    toolbox.tools["add"] = McpTool("add", "calc", tool("add"), connection=None)
    request = {
        "type": "mcp_approval_request",
        "id": "mcpr_1",
        "server_label": "calc",
        "name": "add",
        "arguments": '{"a": 1, "b": 1}',
    }
    approval = {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    (approved,) = approved_calls([request, approval], toolbox, lambda _: None)
    assert (
        approved.approval_request_id == "mcpr_1" and approved.call.arguments == '{"a": 1, "b": 1}'
    )
    made = {"type": "mcp_call", "id": "mcp_1", "approval_request_id": "mcpr_1"}
    assert approved_calls([request, approval, made], toolbox, lambda _: None) == []
    assert approved_calls([request, {**approval, "approve": False}], toolbox, lambda _: None) == []
    with pytest.raises(RequestError) as unknown:
        approved_calls([{**approval, "approval_request_id": "mcpr_2"}], toolbox, lambda _: None)
    assert unknown.value.param == "input[0].approval_request_id"
