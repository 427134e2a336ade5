"""`serve --host` on an address the network reaches, or `--allow-request-mcp`, without an api key
is refused at start (before any model is prepared) unless `--insecure-no-auth` asks for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlxserve.cli.serve import _is_loopback
from tests.server import ServerProcess


def serve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlxserve.cli.main", "serve", "--port", "9", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "mac1.local", "::"])
def test_a_reachable_host_without_a_key_is_refused_at_start(host):
    refused = serve("--host", host, "--models-dir", "/nonexistent/models")
    assert refused.returncode == 1
    assert f"--host {host} is reachable from the network" in refused.stderr
    assert "--insecure-no-auth" in refused.stderr


def test_loopback_addresses_need_no_key():
    assert all(map(_is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(_is_loopback, ["0.0.0.0", "10.0.0.1", "example.com"]))


def test_requests_mcp_servers_without_a_key_are_refused_at_start():
    refused = serve("--allow-request-mcp", "--models-dir", "/nonexistent/models")
    assert refused.returncode == 1
    assert "--allow-request-mcp lets every client" in refused.stderr
    assert "--api-key" in refused.stderr and "--insecure-no-auth" in refused.stderr


def test_insecure_no_auth_serves_requests_mcp_servers_with_a_warning(tmp_path):
    args = ["--allow-request-mcp", "--insecure-no-auth"]
    server = ServerProcess(tmp_path, model="nobody/missing", engine="llamacpp", extra_args=args)
    with server.start(wait_for_model=False):
        assert server.health() is not None
    assert "--allow-request-mcp without --api-key" in server.log_text()
