"""What the CLI commands that talk to a running server share: --host/--port, a small JSON client,
and exit codes scripts can rely on (0 ok, 1 error, 2 usage, 3 no server running)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator

import httpx

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 1234


class ServerNotRunning(Exception):
    def __init__(self, url: str):
        super().__init__(f"no server is running at {url} (start one with `mlxserve server start`)")


class ServerError(Exception):
    """The server answered with an error; the message is its OpenAI-shaped error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=os.environ.get("MLXSERVE_HOST", DEFAULT_HOST),
        help=f"server host (default: $MLXSERVE_HOST or {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("MLXSERVE_PORT", DEFAULT_PORT)),
        help=f"server port (default: $MLXSERVE_PORT or {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MLXSERVE_API_KEY"),
        help="bearer token, when the server requires one (default: $MLXSERVE_API_KEY)",
    )


def server_url(host: str, port: int) -> str:
    # A server bound to every interface is reached through the loopback address.
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{port}"


class Client:
    def __init__(self, args: argparse.Namespace, timeout: float = 30.0):
        self.url = server_url(args.host, args.port)
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def get(self, path: str) -> dict:
        return self._request("GET", path)

    def post(self, path: str, body: dict, timeout: float | None = None) -> dict:
        return self._request("POST", path, json=body, timeout=timeout or self._http.timeout)

    def stream_events(self, path: str) -> Iterator[dict | None]:
        """Server-sent events as dicts; None for each comment line (the server's keep-alives),
        so a caller knows the feed is open before the first record arrives."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(10, read=None)) as response:
                _raise_for_error(response, read=True)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[len("data: ") :])
                    elif line.startswith(":"):
                        yield None
        except httpx.ConnectError as exc:
            raise ServerNotRunning(self.url) from exc

    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerNotRunning(self.url) from exc
        _raise_for_error(response)
        return response.json()


def _raise_for_error(response: httpx.Response, read: bool = False) -> None:
    if response.status_code < 400:
        return
    if read:
        response.read()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text or response.reason_phrase
    raise ServerError(response.status_code, message)


def handle_errors(command: Callable[..., int]) -> Callable[..., int]:
    """Turn the expected failures into one line on stderr and an exit code, not a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except ServerNotRunning as exc:
            print(f"mlxserve: {exc}", file=sys.stderr)
            return EXIT_NOT_RUNNING
        except ServerError as exc:
            print(f"mlxserve: error {exc.status}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except httpx.HTTPError as exc:
            print(f"mlxserve: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return 130

    return run


def format_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
