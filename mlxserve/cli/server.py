"""`mlxserve server start|stop|status`: the server as a background process.

`start` runs `mlxserve serve` detached, with its pid in $MLXSERVE_HOME/server-PORT.pid and its
output in $MLXSERVE_HOME/logs/server-PORT.log, and returns once the server answers and its model
is loaded. One file pair per port, so servers on different ports are managed independently.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mlxserve.cli.client import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    Client,
    ServerNotRunning,
    add_server_options,
    handle_errors,
    server_url,
)
from mlxserve.models.store import mlxserve_home
from mlxserve.processes import process_exists

POLL_SECONDS = 0.25


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve server", description="Start, stop or inspect a background server."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="start|stop|status")
    start = actions.add_parser(
        "start",
        help="start a server in the background",
        description="Start `mlxserve serve` in the background and wait until its model is "
        "loaded. Options not listed here (--engine, --model, --models-dir, --ttl, ...) are "
        "passed on to `mlxserve serve`.",
    )
    start.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    stop = actions.add_parser("stop", help="stop a server started with `server start`")
    stop.add_argument("--timeout", type=float, default=30, help="seconds to wait (default 30)")
    status = actions.add_parser("status", help="is a server running, and what has it loaded")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    for action in (start, stop, status):
        add_server_options(action)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, serve_args = parser.parse_known_args(argv)
    if serve_args and args.action != "start":
        parser.error(f"unrecognized arguments: {' '.join(serve_args)}")
    if args.action == "start":
        return start(args, serve_args)
    return stop(args) if args.action == "stop" else status(args)


def pid_file(port: int) -> Path:
    return mlxserve_home() / f"server-{port}.pid"


def log_file(port: int) -> Path:
    return mlxserve_home() / "logs" / f"server-{port}.log"


@handle_errors
def start(args: argparse.Namespace, serve_args: list[str]) -> int:
    client = Client(args, timeout=5)
    if _health(client) is not None:
        print(f"mlxserve: a server is already running at {client.url}")
        return EXIT_OK
    log_path = log_file(args.port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlxserve.cli.main", "serve"]
    command += ["--host", args.host, "--port", str(args.port), *serve_args]
    # The key reaches the server in its environment, which other users cannot read, never on
    # its command line, which `ps` shows to everyone.
    environment = {**os.environ, "MLXSERVE_API_KEY": args.api_key} if args.api_key else None
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this command and the terminal it ran in
        )
    pid_file(args.port).write_text(f"{process.pid}\n")
    return _wait_until_ready(process, client, args.port, time.monotonic() + args.timeout)


def _wait_until_ready(process: subprocess.Popen, client: Client, port: int, deadline: float) -> int:
    log_path = log_file(port)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file(port).unlink(missing_ok=True)
            print(
                f"mlxserve: the server exited with code {process.returncode}; "
                f"last lines of {log_path}:\n{_tail(log_path)}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        if _health(client) is not None:
            instances = client.get("/api/v0/loaded")
            if not instances["loading"]:
                loaded = ", ".join(i["identifier"] for i in instances["data"]) or "none"
                print(f"mlxserve: server running at {client.url}/v1 (pid {process.pid})")
                print(f"loaded: {loaded}\nlog: {log_path}")
                return EXIT_OK
        time.sleep(POLL_SECONDS)
    print(
        f"mlxserve: the server (pid {process.pid}) is not ready yet; see {log_path}, "
        "or stop it with `mlxserve server stop`",
        file=sys.stderr,
    )
    return EXIT_ERROR


@handle_errors
def stop(args: argparse.Namespace) -> int:
    url = server_url(args.host, args.port)
    path = pid_file(args.port)
    pid = _read_pid(path)
    if pid is None or not _is_running_server(pid):
        path.unlink(missing_ok=True)
        if _health(Client(args, timeout=5)) is not None:
            print(
                f"mlxserve: the server at {url} was not started with `mlxserve server start` "
                "(no pid file); stop it where it runs",
                file=sys.stderr,
            )
            return EXIT_ERROR
        print(f"mlxserve: no server is running at {url}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _is_running_server(pid):
        if time.monotonic() > deadline:
            print(f"mlxserve: pid {pid} did not stop within {args.timeout:g} s", file=sys.stderr)
            return EXIT_ERROR
        time.sleep(POLL_SECONDS)
    path.unlink(missing_ok=True)
    print(f"mlxserve: stopped the server at {url} (pid {pid})")
    return EXIT_OK


@handle_errors
def status(args: argparse.Namespace) -> int:
    client = Client(args, timeout=5)
    health = _health(client)
    pid = _read_pid(pid_file(args.port))
    pid = pid if pid is not None and _is_running_server(pid) else None
    if health is None:
        report = {"running": False, "url": client.url, "port": args.port}
        print(json.dumps(report) if args.json else f"not running ({client.url})")
        return EXIT_NOT_RUNNING
    instances = client.get("/api/v0/loaded")
    loaded = [instance["identifier"] for instance in instances["data"]]
    report = {
        "running": True,
        "url": client.url,
        "port": args.port,
        "pid": pid,
        "loaded": loaded,
        "loading": instances["loading"],
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(f"running at {client.url}/v1")
    print(f"pid: {pid if pid is not None else 'unknown (not started by `mlxserve server start`)'}")
    print(f"port: {args.port}")
    print(f"loaded: {', '.join(loaded) or 'none'}")
    if instances["loading"]:
        print(f"loading: {', '.join(instances['loading'])}")
    return EXIT_OK


def _health(client: Client) -> dict | None:
    try:
        return client.get("/health")
    except ServerNotRunning:
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_running_server(pid: int) -> bool:
    """Alive, not a zombie, and an mlxserve process, not a reused pid."""
    try:
        process = psutil.Process(pid)
        alive = process.status() != psutil.STATUS_ZOMBIE
        return alive and any("mlxserve" in part for part in process.cmdline())
    except psutil.AccessDenied:
        return process_exists(pid)  # another user's: it exists, its command line is hidden
    except psutil.Error:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
