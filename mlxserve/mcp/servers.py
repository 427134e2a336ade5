"""MCP servers whose tools the model may call, reached with the official `mcp` SDK over
streamable HTTP or stdio. Each connection is held open by a task of its own, since the SDK's
anyio scopes must be left by the task that entered them; requests call through it from theirs.

Headers and environment values are secrets (API tokens): they are never logged nor repeated in
errors. What goes wrong reaches the client, the model and the prompt log only in general words,
the same for a refused, silent or unreachable server (else a client could scan ports through
this server); the details go to the server log, without URLs' query strings."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlxserve.net.hosts import HostPolicy
from mlxserve.pipeline.errors import RequestError
from mlxserve.redact import scrub

if TYPE_CHECKING:  # the SDK is imported on first use: `serve` starts as fast without MCP
    from mcp import Client
    from mcp.types import CallToolResult, Tool

log = logging.getLogger(__name__)
# The SDK's HTTP client logs every message's URL, which may carry a token: warnings only.
logging.getLogger("httpx2").setLevel(logging.WARNING)

CONNECT_TIMEOUT = 30.0  # seconds to start or reach a server and list its tools
CALL_TIMEOUT = 120.0  # seconds one tool call may take
CLOSE_TIMEOUT = 10.0  # the SDK stops a stdio server within ~6 s (stdin closed, TERM, KILL)
MAX_OUTPUT_CHARS = 32_768  # of a tool's output kept for the model and the client
FAILED_DEPENDENCY = 424  # what OpenAI answers when an MCP server cannot be used
# JSON-RPC error codes, as MCP uses them
CONNECTION_CLOSED, REQUEST_TIMEOUT, INVALID_PARAMS = -32000, -32001, -32602
# One wording for every failure to reach a server, so no client can scan ports through this one
UNREACHABLE = "could not be reached, or did not answer as an MCP server"
LOST = "the server could not be reached, or did not answer as an MCP server"


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one server: a URL (streamable HTTP) or a command (stdio)."""

    label: str  # server_label, or the server's name in mcp.json
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def where(self) -> str:
        """The server for messages: its URL without query or credentials, or its command."""
        if self.url is None:
            return self.command or ""
        parts = urlsplit(self.url)
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path}"


class McpServerError(RequestError):
    """A server that could not be started, reached or listed: a 424 naming it, in words that
    are the same whatever failed; the cause goes to the server log."""

    def __init__(self, spec: ServerSpec, param: str | None, cause: BaseException, code: str):
        log.warning("MCP server '%s' (%s) %s: %s", spec.label, spec.where, UNREACHABLE, why(cause))
        super().__init__(FAILED_DEPENDENCY, f"MCP server '{spec.label}' {UNREACHABLE}", param, code)


@dataclass(frozen=True)
class CallOutcome:
    """What one tool call gave: its text, or an error in OpenAI's McpToolCallError shape."""

    output: str | None = None
    content: list[dict] = field(default_factory=list)  # the result's content blocks
    error: dict | None = None

    @property
    def text(self) -> str:
        """What the model reads as the call's result."""
        if self.error is None:
            return self.output or ""
        if self.error["type"] == "mcp_tool_execution_error":
            return "error: " + content_text(self.error["content"])
        return "error: " + self.error["message"]


class Connection:
    """One open MCP session, held by its own task until close()."""

    def __init__(
        self, spec: ServerSpec, call_timeout: float = CALL_TIMEOUT, hosts: HostPolicy | None = None
    ):
        self.spec, self.call_timeout = spec, call_timeout
        self.hosts = hosts  # set for a server a request names: where it may connect
        self._client: Client | None = None
        self._task: asyncio.Task | None = None
        self._closing = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self._client is not None and self._task is not None and not self._task.done()

    async def open(self, param: str | None, code: str) -> None:
        """Start or reach the server; a McpServerError (naming `param`) when that fails."""
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._hold(ready))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.shield(ready)
        except (Exception, TimeoutError) as exc:
            await self.close()
            raise McpServerError(self.spec, param, exc, code) from None
        except BaseException:  # the request itself was cancelled: stop connecting, too
            self._closing.set()
            self._task.cancel()
            raise

    async def list_tools(self, param: str | None, code: str) -> list[Tool]:
        tools: list[Tool] = []
        cursor = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                while True:
                    page = await self._session().list_tools(cursor=cursor)
                    tools += page.tools
                    cursor = page.next_cursor
                    if cursor is None:
                        return tools
        except (Exception, TimeoutError) as exc:
            raise McpServerError(self.spec, param, exc, code) from None

    async def call(self, name: str, arguments: dict[str, Any]) -> CallOutcome:
        """The tool's result; a failure to reach the server is an outcome too (the model reads
        it), never an exception."""
        import httpx2
        from mcp import MCPError

        try:
            async with asyncio.timeout(self.call_timeout + 1):
                result = await self._session().call_tool(
                    name, arguments, read_timeout_seconds=self.call_timeout
                )
        except TimeoutError:
            message = f"the call did not finish within {self.call_timeout:g} s"
            return protocol_error(REQUEST_TIMEOUT, message)
        except MCPError as exc:  # the server's own error, or the SDK's words for a lost one
            return protocol_error(exc.code, scrub(exc.message))
        except httpx2.HTTPStatusError as exc:
            status = exc.response.status_code
            message = f"the server answered with HTTP status {status}"
            return CallOutcome(error={"type": "http_error", "code": status, "message": message})
        except Exception as exc:  # noqa: BLE001 - a lost server is the call's result
            log.warning("MCP server '%s': call to %s failed: %s", self.spec.label, name, why(exc))
            return protocol_error(CONNECTION_CLOSED, LOST)
        return outcome_of(result)

    async def close(self) -> None:
        """Leave the session: a stdio server is stopped (its stdin closed, then TERM, KILL)."""
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        if self._client is None:  # still connecting: nothing to leave cleanly
            task.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("MCP server '%s' did not stop in time", self.spec.label)
            task.cancel()
        except asyncio.CancelledError:
            if not task.cancelled():  # the caller itself is being cancelled
                raise

    def _session(self) -> Client:
        if not self.alive:
            raise ConnectionError("the connection to the server was lost")
        return self._client

    async def _hold(self, ready: asyncio.Future) -> None:
        from mcp import Client

        try:
            async with self._http_client() as http:
                async with Client(self._transport(http)) as client:
                    self._client = client
                    ready.set_result(None)
                    await self._closing.wait()
        except Exception as exc:  # noqa: BLE001 - reported to whoever waits to connect
            if not ready.done():
                ready.set_exception(exc)
            elif not self._closing.is_set():
                log.warning("MCP server '%s' went away: %s", self.spec.label, why(exc))
        finally:
            self._client = None
            if not ready.done():
                ready.cancel()

    def _http_client(self):
        """The SDK's HTTP client; a request's server is reached through PinnedTransport, so every
        connection goes to an address its policy allows (and no proxy from the environment)."""
        import httpx2

        timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=300)  # the SDK's own defaults
        transport = None
        if self.hosts is not None and self.spec.url is not None:
            from mlxserve.net.pinned_transport import PinnedTransport

            transport = PinnedTransport(self.hosts, httpx2.URL(self.spec.url).host)
        return httpx2.AsyncClient(headers=self.spec.headers, timeout=timeout, transport=transport)

    def _transport(self, http):
        from mcp import StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client

        spec = self.spec
        if spec.url is not None:
            return streamable_http_client(spec.url, http_client=http)
        return StdioServerParameters(command=spec.command, args=list(spec.args), env=spec.env)


def outcome_of(result: CallToolResult) -> CallOutcome:
    content = [
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    ]
    text = content_text(content)
    if len(text) > MAX_OUTPUT_CHARS:  # one text block, cut, instead of the whole
        text = capped(text)
        content = [{"type": "text", "text": text}]
    if result.is_error:
        error = {"type": "mcp_tool_execution_error", "content": content}
        return CallOutcome(content=content, error=error)
    return CallOutcome(output=text, content=content)


def protocol_error(code: int, message: str) -> CallOutcome:
    return CallOutcome(error={"type": "mcp_protocol_error", "code": code, "message": message})


def content_text(content: list[dict]) -> str:
    """Content blocks as text: their text, other kinds as JSON."""
    texts = [
        block["text"] if block.get("type") == "text" else json.dumps(block) for block in content
    ]
    return "\n".join(texts)


def capped(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    cut = len(text) - MAX_OUTPUT_CHARS
    return f"{text[:MAX_OUTPUT_CHARS]}\n[... {cut} more characters cut]"


def why(exc: BaseException) -> str:
    """The innermost cause of a failure (the SDK wraps them in exception groups), for the server
    log: its type and text, URLs without query or credentials."""
    while inner := getattr(exc, "exceptions", None):  # an exception group
        exc = inner[0]
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {scrub(str(exc))}" if str(exc) else type(exc).__name__
