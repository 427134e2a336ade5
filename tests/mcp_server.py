"""A real MCP server for the tests, made with the official SDK: `add` and `multiply` tools that
write each call to a file, so a test can tell whether (and with what) the server was called, and
`wait`, which takes its time (its call is written as it starts).

    python -m tests.mcp_server --calls FILE                 # over stdio
    python -m tests.mcp_server --calls FILE --port PORT     # streamable HTTP, 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

SCRIPT = Path(__file__)
# Small bounds keep a forced call's arguments short for a base model
Small = Annotated[int, Field(ge=0, le=99)]


def make_server(calls: Path) -> MCPServer:
    server = MCPServer("mlxserve-test-tools")

    def record(name: str, arguments: dict) -> None:
        with calls.open("a") as log:
            log.write(json.dumps({"tool": name, "arguments": arguments}) + "\n")

    @server.tool()
    def add(a: Small, b: Small) -> int:
        """Add two numbers."""
        record("add", {"a": a, "b": b})
        return a + b

    @server.tool()
    def multiply(a: Small, b: Small) -> int:
        """Multiply two numbers."""
        record("multiply", {"a": a, "b": b})
        return a * b

    @server.tool()
    async def wait(seconds: Annotated[float, Field(ge=0, le=10)]) -> str:
        """Answer after some seconds."""
        record("wait", {"seconds": seconds})
        await asyncio.sleep(seconds)
        return "done"

    return server


def recorded_calls(calls: Path) -> list[dict]:
    """The calls a server made with `calls` has answered, in order."""
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines() if line]


def start_http(calls: Path, port: int) -> subprocess.Popen:
    """This server over streamable HTTP at http://127.0.0.1:PORT/mcp, once it accepts."""
    command = [sys.executable, str(SCRIPT), "--calls", str(calls), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the MCP test server did not start")


def running(pattern: str) -> list[int]:
    """Pids of processes whose command line holds `pattern` (a server's calls file)."""
    command = ["ps", "-ww", "-eo", "pid=,args="]  # -ww: whole command lines, at any width
    listing = subprocess.run(command, capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if pattern in line]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=Path, required=True)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    server = make_server(args.calls)
    if args.port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
