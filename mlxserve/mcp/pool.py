"""Which MCP servers requests may use, and their connections. Both kinds are off unless the
server was started to allow them, as in LM Studio: servers a request names by URL need
`--allow-request-mcp` (and must be on public addresses or hosts `--mcp-allowed-hosts` lists);
the servers of an `mcp.json` file (Cursor's format) need `--mcp-config` and `--api-key`, since
they may run commands on this machine. One request uses one kind or the other, unless
`--allow-mixed-mcp`: a server it names could otherwise steer the model to the operator's.

A request's own servers are connected for that request and left when it ends; `mcp.json`
servers are started on first use and kept for later requests, until the server shuts down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mlxserve.mcp.servers import Connection, McpServerError, ServerSpec
from mlxserve.mcp.specs import ServerChoice
from mlxserve.models.store import mlxserve_home
from mlxserve.net.hosts import HostNotAllowed, HostPolicy
from mlxserve.pipeline.errors import RequestError

PLUGIN_PREFIX = "mcp/"  # LM Studio's ids for mcp.json servers: mcp/<name>


class McpConfigError(ValueError):
    """An mcp.json file that cannot be read: the server does not start."""


@dataclass(frozen=True)
class McpSettings:
    allow_request_servers: bool = False  # --allow-request-mcp
    plugins: dict[str, ServerSpec] | None = None  # from --mcp-config; None: not given
    config_path: Path | None = None
    api_key_set: bool = False
    hosts: HostPolicy = field(default_factory=HostPolicy)  # --mcp-allowed-hosts
    allow_mixing: bool = False  # --allow-mixed-mcp


def mcp_settings(
    allow_request_servers: bool,
    config: str | None,
    api_key: bool,
    *,
    allowed_hosts: Iterable[str] = (),
    allow_mixing: bool = False,
) -> McpSettings:
    """The settings from `serve`'s options: --mcp-config's file (None: not given; empty:
    $MLXSERVE_HOME/mcp.json) is read now, so a broken one stops the server at once."""
    path = plugins = None
    if config is not None:
        path = Path(config).expanduser() if config else mlxserve_home() / "mcp.json"
        plugins = load_config(path)
    hosts = HostPolicy.of(allowed_hosts)
    return McpSettings(allow_request_servers, plugins, path, api_key, hosts, allow_mixing)


def load_config(path: Path) -> dict[str, ServerSpec]:
    """The servers of an mcp.json file: {"mcpServers": {name: {"command", "args", "env"} or
    {"url", "headers"}}}."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise McpConfigError(f"cannot read MCP servers from {path}: {exc}") from None
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise McpConfigError(f"{path}: expected an object with an 'mcpServers' object")
    return {name: _server_spec(name, entry, path) for name, entry in servers.items()}


def _server_spec(name: str, entry, path: Path) -> ServerSpec:
    where = f"{path}: mcpServers.{name}"
    if not isinstance(entry, dict):
        raise McpConfigError(f"{where}: expected an object")
    url, command = entry.get("url"), entry.get("command")
    args, env, headers = entry.get("args", []), entry.get("env", {}), entry.get("headers", {})
    if not (isinstance(url, str) or isinstance(command, str)):
        raise McpConfigError(f"{where}: needs a 'command' (stdio) or a 'url' (streamable HTTP)")
    if not (_strings(args, list) and _strings(env, dict) and _strings(headers, dict)):
        raise McpConfigError(f"{where}: 'args' must be strings, 'env' and 'headers' objects")
    if isinstance(url, str):
        return ServerSpec(name, url=url, headers=headers)
    return ServerSpec(name, command=command, args=tuple(args), env=env)


def _strings(value, kind: type) -> bool:
    values = value.values() if isinstance(value, dict) else value
    return isinstance(value, kind) and all(isinstance(item, str) for item in values)


class McpServers:
    """The server's MCP connections, kept on the app."""

    def __init__(self, settings: McpSettings = McpSettings()):
        self.settings = settings
        self._plugins: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._per_request: set[Connection] = set()

    async def check(self, choices: list[ServerChoice]) -> None:
        """Every refusal of a request's servers, before any of them is connected: kinds that
        are off (403), both kinds at once (400), a server on an address requests may not reach
        (403) or whose name does not resolve (424)."""
        for choice in choices:
            if choice.named_by_url:
                self.check_request_servers(choice.param)
            else:
                self.plugin_spec(choice.plugin_id, choice.param)
        self._check_mixing(choices)
        for choice in choices:
            if choice.named_by_url:
                await self.check_host(choice.spec, choice.param)

    def _check_mixing(self, choices: list[ServerChoice]) -> None:
        kinds = {choice.named_by_url for choice in choices}
        if len(kinds) < 2 or self.settings.allow_mixing:
            return
        param = next(c.param for c in choices if c.named_by_url != choices[0].named_by_url)
        message = (
            f"{param}: this request names MCP servers by URL and mcp.json plugins together; this "
            "server keeps them apart, since a server's tool output could steer the model into "
            "calling the plugins (start it with --allow-mixed-mcp to allow it)"
        )
        raise RequestError(400, message, param, "mixed_mcp_servers")

    async def check_host(self, spec: ServerSpec, param: str) -> None:
        """A server a request names must resolve to public addresses only, unless its host is
        listed; PinnedTransport checks again on every connection."""
        where = f"{param}.server_url"
        parts = urlsplit(spec.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await self.settings.hosts.addresses(parts.hostname, port)
        except HostNotAllowed:
            message = (
                f"{where}: MCP server '{spec.label}' is on a loopback, private or other non-public "
                "address, which requests may not reach (--mcp-allowed-hosts lists hosts they may)"
            )
            raise RequestError(403, message, where, "mcp_host_not_allowed") from None
        except OSError as exc:  # the name does not resolve
            raise McpServerError(spec, param, exc, "mcp_connection_error") from None

    def check_request_servers(self, param: str) -> None:
        if not self.settings.allow_request_servers:
            raise RequestError(
                403,
                f"{param}: MCP servers named in requests are off on this server; start it with "
                "--allow-request-mcp to allow them",
                param,
                "mcp_not_allowed",
            )

    def plugin_spec(self, plugin_id: str, param: str) -> ServerSpec:
        """The mcp.json server a plugin id ("mcp/<name>") names, where plugins are allowed."""
        settings = self.settings
        if settings.plugins is None:
            message = f"{param}: plugins are off on this server; start it with --mcp-config"
            raise RequestError(403, message, param, "plugins_not_allowed")
        if not settings.api_key_set:
            message = (
                f"{param}: plugins run commands on this server's machine and need it started "
                "with --api-key too"
            )
            raise RequestError(403, message, param, "plugins_not_allowed")
        spec = settings.plugins.get(plugin_id.removeprefix(PLUGIN_PREFIX))
        if not plugin_id.startswith(PLUGIN_PREFIX) or spec is None:
            known = ", ".join(PLUGIN_PREFIX + name for name in settings.plugins) or "none"
            message = f"{param}: no plugin '{plugin_id}' (configured: {known})"
            raise RequestError(400, message, param, "plugin_not_found")
        return spec

    async def plugin(self, spec: ServerSpec, param: str) -> Connection:
        """The kept connection to an mcp.json server, started (again, if it died) as needed."""
        async with self._opening.setdefault(spec.label, asyncio.Lock()):
            connection = self._plugins.get(spec.label)
            if connection is None or not connection.alive:
                connection = Connection(spec)
                await connection.open(param, "plugin_connection_error")
                self._plugins[spec.label] = connection
            return connection

    async def connect(self, spec: ServerSpec, param: str) -> Connection:
        """A connection for one request; the caller leaves it with release()."""
        connection = Connection(spec, hosts=self.settings.hosts)
        await connection.open(param, "mcp_connection_error")
        self._per_request.add(connection)
        return connection

    async def release(self, connection: Connection) -> None:
        if connection in self._per_request:
            self._per_request.discard(connection)
            await connection.close()

    async def close(self) -> None:
        """Leave every server: stdio servers are stopped, none outlives this server."""
        connections = [*self._plugins.values(), *self._per_request]
        self._plugins.clear()
        self._per_request.clear()
        await asyncio.gather(*(connection.close() for connection in connections))
