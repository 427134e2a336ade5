"""MCP servers the model calls through mlxserve, end to end: a tiny Gemma 3 of random weights
with the real one's vocabulary and template, on both engines, a real MCP server
(tests/mcp_server.py) over streamable HTTP and, as an mcp.json plugin, over stdio; the official
`openai` SDK on /v1/responses and httpx on /api/v1/chat.

The model's argument values may be anything: the grammar holds the call to the tool's schema,
and each test checks the server's answer against the arguments the call carried. A forced call
takes about 20 tokens; the rounds after it share what is left of the request's
max_output_tokens."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.conftest import ENGINES
from tests.mcp_server import SCRIPT, recorded_calls, running, start_http
from tests.server import ServerProcess, free_port

KEY = "mcp-test-key"
QUESTION = "What is 2 plus 3?"
CALL_TOKENS = 32  # a forced call, and a few tokens after it
STREAM_EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def mcp_http(tmp_path_factory):
    """The test MCP server over streamable HTTP: (its URL, the file its calls go to)."""
    calls = tmp_path_factory.mktemp("mcp-http") / "calls.jsonl"
    port = free_port()
    process = start_http(calls, port)
    yield f"http://127.0.0.1:{port}/mcp", calls
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module", params=ENGINES)
def mcp_serve(request, models_dir, twin_ids, tmp_path_factory):
    """mlxserve with requests' MCP servers allowed (the test server's host listed, as it is not
    public) and the stdio test server as plugin `mcp/calc`, behind the API key."""
    folder = tmp_path_factory.mktemp(f"mcp-{request.param}")
    calls = folder / "plugin-calls.jsonl"
    plugin = {"command": sys.executable, "args": [str(SCRIPT), "--calls", str(calls)]}
    config = folder / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"calc": plugin}}))
    args = ["--allow-request-mcp", "--mcp-allowed-hosts", "127.0.0.1", "--api-key", KEY]
    args += ["--mcp-config", str(config)]
    model = twin_ids[request.param]
    with ServerProcess(models_dir, model=model, engine=request.param, extra_args=args) as server:
        server.plugin_calls, server.model = calls, model
        yield server


@pytest.fixture
def client(mcp_serve) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{mcp_serve.base_url}/v1", api_key=KEY, max_retries=0)


def mcp_tool(url: str, **options) -> dict:
    return {"type": "mcp", "server_label": "calc", "server_url": url, **options}


def chat(server, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.base_url}/api/v1/chat", json=body, headers=headers, timeout=600)


def chat_events(server, body: dict) -> list[tuple[str, dict]]:
    url, headers = f"{server.base_url}/api/v1/chat", {"Authorization": f"Bearer {KEY}"}
    body = {**body, "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=600) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    return list(zip(names, payloads, strict=True))


def added(arguments: str | dict) -> str:
    values = json.loads(arguments) if isinstance(arguments, str) else arguments
    return str(values["a"] + values["b"])


def forced_call(client: openai.OpenAI, model: str, tool: dict, **options):
    """One greedy /v1/responses request whose first step must call the MCP tool."""
    return client.responses.create(
        model=model,
        input=QUESTION,
        tools=[tool],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=CALL_TOKENS,
        temperature=0,
        **options,
    )


def new_calls(calls: Path, before: int) -> list[dict]:
    return recorded_calls(calls)[before:]


def test_requests_mcp_servers_are_refused_unless_the_server_allows_them(models_dir, tmp_path):
    """No --allow-request-mcp, and --mcp-config without --api-key: 403s naming the flag."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"calc": {"command": "true"}}}))
    args = ["--mcp-config", str(config)]
    closed = ServerProcess(models_dir, model="nobody/missing", engine="llamacpp", extra_args=args)
    with closed.start(wait_for_model=False) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.responses.create(
                model="any", input="Hi", tools=[mcp_tool("http://127.0.0.1:9/mcp")]
            )
        error = refused.value.body
        assert error["param"] == "tools[0]" and "--allow-request-mcp" in error["message"]
        ephemeral = {"type": "ephemeral_mcp", "server_label": "x", "server_url": "http://h/mcp"}
        for integration, flag in ((ephemeral, "--allow-request-mcp"), ("mcp/calc", "--api-key")):
            response = chat(server, {"model": "any", "input": "Hi", "integrations": [integration]})
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["type"] == "permission_error" and flag in error["message"]
            assert error["param"] == "integrations[0]"
    assert "--mcp-config: its servers are refused" in server.log_text()


def test_a_forced_mcp_call_streams_runs_on_the_server_and_the_model_goes_on(
    client, mcp_serve, mcp_http
):
    url, calls = mcp_http
    before = len(recorded_calls(calls))
    tool = mcp_tool(url, allowed_tools=["add"], require_approval="never")
    events = list(forced_call(client, mcp_serve.model, tool, stream=True))
    for event in events:
        STREAM_EVENTS.validate_python(event.to_dict())
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    first = [k for i, k in enumerate(kinds) if k != kinds[i - 1] or "delta" not in k]
    assert first[:12] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert kinds[-1] == "response.completed"
    response = Response.model_validate(events[-1].response.to_dict())
    listing, call = response.output[:2]
    assert listing.type == "mcp_list_tools" and [t.name for t in listing.tools] == ["add"]
    assert call.type == "mcp_call" and call.name == "add" and call.status == "completed"
    assert call.output == added(call.arguments) and call.server_label == "calc"
    streamed = "".join(e.delta for e in events if e.type == "response.mcp_call_arguments.delta")
    assert streamed == call.arguments
    assert new_calls(calls, before) == [{"tool": "add", "arguments": json.loads(call.arguments)}]
    # The model read the result and went on: another round, within the same token budget.
    assert len(response.output) > 2 and response.usage.output_tokens <= CALL_TOKENS


def test_a_call_that_needs_approval_runs_only_once_approved(client, mcp_serve, mcp_http):
    url, calls = mcp_http
    before = len(recorded_calls(calls))
    tool = mcp_tool(url, allowed_tools=["add"], require_approval="always")
    asked = forced_call(client, mcp_serve.model, tool)
    assert [item.type for item in asked.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = asked.output[1]
    assert request.name == "add" and request.server_label == "calc" and request.id
    assert new_calls(calls, before) == []  # asked, not called
    approved = client.responses.create(
        model=mcp_serve.model,
        previous_response_id=asked.id,
        input=[
            {"type": "mcp_approval_response", "approve": True, "approval_request_id": request.id}
        ],
        tools=[tool],
        max_output_tokens=2,
        temperature=0,
    )
    call = approved.output[0]  # the listing is in the conversation already: not again
    assert call.type == "mcp_call" and call.approval_request_id == request.id
    assert call.arguments == request.arguments and call.output == added(request.arguments)
    assert new_calls(calls, before) == [{"tool": "add", "arguments": json.loads(call.arguments)}]


def test_allowed_tools_leave_the_other_tools_out_of_the_prompt(client, mcp_serve, mcp_http):
    url, _ = mcp_http

    def prompt_tokens(tool: dict) -> int:
        kwargs = {"model": mcp_serve.model, "input": QUESTION, "max_output_tokens": 1}
        return client.responses.create(tools=[tool], **kwargs).usage.input_tokens

    every, only_add = (
        prompt_tokens(mcp_tool(url)),
        prompt_tokens(mcp_tool(url, allowed_tools=["add"])),
    )
    assert every > only_add + 30  # multiply's and wait's definitions


def test_an_ephemeral_mcp_call_streams_in_lmstudios_order(mcp_serve, mcp_http):
    url, calls = mcp_http
    before = len(recorded_calls(calls))
    integration = {"type": "ephemeral_mcp", "server_label": "calc", "server_url": url}
    body = {
        "model": mcp_serve.model,
        "input": QUESTION,
        "integrations": [{**integration, "allowed_tools": ["add"]}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_output_tokens": CALL_TOKENS,
        "temperature": 0,
    }
    events = chat_events(mcp_serve, body)
    names = [name for name, _ in events]
    provider = {"type": "ephemeral_mcp", "server_label": "calc"}
    assert names[:6] == [
        "chat.start",
        "prompt_processing.start",
        "prompt_processing.end",
        "tool_call.start",
        "tool_call.arguments",
        "tool_call.success",
    ]
    assert names[-1] == "chat.end" and all(payload["type"] == name for name, payload in events)
    start, arguments, success = (payload for _, payload in events[3:6])
    assert start == {"type": "tool_call.start", "tool": "add", "provider_info": provider}
    assert arguments["arguments"] == success["arguments"]
    result = events[-1][1]["result"]
    item = result["output"][0]
    assert item == {**success, "type": "tool_call"}
    assert json.loads(item["output"]) == [{"type": "text", "text": added(item["arguments"])}]
    assert new_calls(calls, before) == [{"tool": "add", "arguments": item["arguments"]}]
    assert result["stats"]["total_output_tokens"] <= CALL_TOKENS


def test_a_plugin_from_mcp_json_runs_on_a_stdio_server(mcp_serve):
    body = {
        "model": mcp_serve.model,
        "input": QUESTION,
        "integrations": [{"type": "plugin", "id": "mcp/calc", "allowed_tools": ["add"]}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_output_tokens": CALL_TOKENS,
        "temperature": 0,
    }
    response = chat(mcp_serve, body)
    assert response.status_code == 200, response.text
    item = response.json()["output"][0]
    assert item["type"] == "tool_call" and item["tool"] == "add"
    assert item["provider_info"] == {"type": "plugin", "plugin_id": "mcp/calc"}
    assert json.loads(item["output"]) == [{"type": "text", "text": added(item["arguments"])}]
    assert recorded_calls(mcp_serve.plugin_calls)[-1]["arguments"] == item["arguments"]
    assert running(str(mcp_serve.plugin_calls))  # kept for the next request


def test_an_unreachable_mcp_server_is_a_424_in_each_family(client, mcp_serve):
    gone = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(openai.APIStatusError) as failed:
        client.responses.create(model=mcp_serve.model, input="Hi", tools=[mcp_tool(gone)])
    assert failed.value.status_code == 424
    error = failed.value.body
    assert error["type"] == "external_connector_error" and error["param"] == "tools[0]"
    assert error["code"] == "mcp_connection_error" and "'calc'" in error["message"]
    integration = {"type": "ephemeral_mcp", "server_label": "calc", "server_url": gone}
    response = chat(
        mcp_serve, {"model": mcp_serve.model, "input": "Hi", "integrations": [integration]}
    )
    assert response.status_code == 424
    assert response.json()["error"]["param"] == "integrations[0]"


def test_sigterm_stops_the_kept_stdio_servers_too(mcp_serve):
    """Last in this file: the server is stopped."""
    chat(
        mcp_serve,
        {
            "model": mcp_serve.model,
            "input": "Hi",
            "integrations": ["mcp/calc"],
            "max_output_tokens": 1,
        },
    )
    assert running(str(mcp_serve.plugin_calls))
    mcp_serve.process.send_signal(signal.SIGTERM)
    assert mcp_serve.process.wait(60) == 0
    assert running(str(mcp_serve.plugin_calls)) == []  # stopped before the server exited
