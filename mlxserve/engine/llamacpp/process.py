"""A llama.cpp HTTP server run as a managed child process.

Backend order: an explicit `server_binary`, else the `xllamacpp` wheel (llama.cpp's server built
into a Python extension, run by `launcher.py` in a child Python), else `llama-server` on PATH.

The child binds 127.0.0.1 on a free port. It never outlives us: `stop()` ends it, an atexit hook
stops any still running, and if this process is killed the child dies too (PR_SET_PDEATHSIG on
Linux, and an EOF on the stdin pipe we hold everywhere).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mlxserve.engine.base import PROMPT_CACHE_BYTES, EngineError
from mlxserve.engine.llamacpp import launcher

logger = logging.getLogger("mlxserve.llamacpp")

LOG_TAIL_LINES = 50
HEALTH_POLL_INTERVAL = 0.05
LAUNCHER_PATH = Path(launcher.__file__)
# llama.cpp log lines look like "0.02.074.577 W srv  init: ..."; the letter is the level.
LOG_LEVEL_PATTERN = re.compile(r"^\d+\.\d+\.\d+\.\d+ ([DIWE]) ")
READY_PATTERN = re.compile(re.escape(launcher.READY_MARKER) + r" (http://[0-9.]+:[0-9]+)")
LOG_LEVELS = {"D": logging.DEBUG, "I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR}

# Linux sends the parent-death signal when the *thread* that forked the child exits, so every
# child is forked from this one long-lived thread rather than from short-lived worker threads.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-spawn")
_running: weakref.WeakSet[LlamaServerProcess] = weakref.WeakSet()


class LlamaServerError(EngineError, RuntimeError):
    """The llama.cpp server could not be started, or exited while starting."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def find_backend(server_binary: Path | None = None) -> Path | None:
    """The llama-server binary to run, or None for the built-in xllamacpp server."""
    if server_binary is not None:
        binary = Path(server_binary).expanduser()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise LlamaServerError(f"llama.cpp server binary {binary} is not an executable file")
        return binary.resolve()
    if importlib.util.find_spec("xllamacpp") is not None:
        return None
    on_path = shutil.which("llama-server")
    if on_path is None:
        raise LlamaServerError(
            "no llama.cpp server found: install the xllamacpp wheel (pip install xllamacpp), "
            "put llama-server on PATH, or pass its path with --llama-server"
        )
    return Path(on_path)


class LlamaServerProcess:
    """One llama.cpp server child. `start()` may be called again after the child has died."""

    def __init__(
        self,
        model_path: Path,
        *,
        context_length: int = 4096,
        server_binary: Path | None = None,
        extra_args: Sequence[str] = (),
        parallel: int = 4,
        prompt_cache_bytes: int = PROMPT_CACHE_BYTES,
        api_key: str | None = None,
    ):
        self.model_path = Path(model_path)
        self.context_length = context_length
        self.parallel = parallel
        self.prompt_cache_bytes = prompt_cache_bytes
        self.api_key = api_key  # required by the child on every route but /health
        self.extra_args = list(extra_args)
        self.server_binary = find_backend(server_binary)
        self.base_url = ""
        self._popen: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._announced_url: str | None = None
        self._healthy = False  # /health has answered ok since this child started

    @property
    def backend(self) -> str:
        return "xllamacpp" if self.server_binary is None else str(self.server_binary)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def is_ready(self) -> bool:
        """Alive and past its health check: a child still starting has no usable URL yet."""
        return self._healthy and self.is_alive()

    def log_tail(self) -> str:
        return "\n".join(self._log_tail)

    def server_args(self, port: int) -> list[str]:
        """llama-server options; both backends understand them."""
        threads = str(cpu_count())
        return [
            "-m", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            # llama.cpp splits n_ctx across slots, so each slot gets the full context_length.
            "-c", str(self.context_length * self.parallel),
            "-np", str(self.parallel),
            "-t", threads,
            "-tb", threads,
            "--metrics",
            # llama.cpp keeps finished prompts' KV in RAM for reuse (8 GiB by default): the
            # same bound as an MLX model's prompt cache.
            "--cache-ram", str(self.prompt_cache_bytes // 2**20),
            *self.extra_args,
        ]  # fmt: skip

    def command(self, port: int) -> list[str]:
        """The child's argv: the launcher runs the built-in server or execs the binary."""
        prefix = [sys.executable, str(LAUNCHER_PATH), "--parent-pid", str(os.getpid())]
        if self.server_binary is None:
            return [*prefix, "--exit-on-stdin-eof", *self.server_args(port)]
        return [*prefix, "--exec", str(self.server_binary), "--", *self.server_args(port)]

    def start(self, timeout: float = 60) -> None:
        """Start the child and block until /health answers ok; raise with its log if it fails."""
        if self.is_alive():
            return
        self._reset()
        started = time.monotonic()
        # The built-in server binds port 0 and announces its URL; a binary gets a port from us.
        port = 0 if self.server_binary is None else free_port()
        if port:
            self.base_url = f"http://127.0.0.1:{port}"
        argv = self.command(port)
        logger.info("starting llama.cpp (%s) for %s", self.backend, self.model_path.name)
        env = {**os.environ, launcher.API_KEY_VARIABLE: self.api_key} if self.api_key else None
        self._popen = _spawner.submit(self._spawn, argv, env).result()
        _running.add(self)
        self._reader = threading.Thread(target=self._read_output, name="llamacpp-log", daemon=True)
        self._reader.start()
        try:
            self._wait_until_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self._healthy = True
        logger.info(
            "llama.cpp ready at %s (pid %d) in %.1f s",
            self.base_url,
            self.pid,
            time.monotonic() - started,
        )

    def stop(self, timeout: float = 10) -> None:
        """Close the stdin pipe, SIGTERM, wait, then SIGKILL; always reaps the child."""
        popen = self._popen
        if popen is None:
            return
        if popen.stdin is not None and not popen.stdin.closed:
            popen.stdin.close()
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("llama.cpp (pid %d) ignored SIGTERM; killing it", popen.pid)
                popen.kill()
                popen.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        _running.discard(self)

    def _reset(self) -> None:
        """Reap a previous child before starting a new one."""
        self._healthy = False
        self.stop()
        self._log_tail.clear()
        self._announced_url = None
        self.base_url = ""

    @staticmethod
    def _spawn(argv: list[str], env: dict | None) -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal Ctrl-C reaches only us, and we stop it in order.
            start_new_session=True,
        )

    def _read_output(self) -> None:
        """Forward the child's output to logging, keep its tail, and catch the ready marker."""
        assert self._popen is not None and self._popen.stdout is not None
        for raw in self._popen.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            announced = READY_PATTERN.search(line)
            if announced:
                self._announced_url = announced.group(1)
                continue
            if not line:
                continue
            self._log_tail.append(line)
            match = LOG_LEVEL_PATTERN.match(line)
            logger.log(LOG_LEVELS[match.group(1)] if match else logging.INFO, "%s", line)
        self._popen.stdout.close()

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self._popen is not None
                if self._popen.poll() is not None:
                    self._reader.join(timeout=2)
                    raise LlamaServerError(
                        f"llama.cpp server exited with code {self._popen.returncode} while "
                        f"starting:\n{self.log_tail()}"
                    )
                if self._announced_url and not self.base_url:
                    self.base_url = self._announced_url
                if self.base_url and self._is_healthy(client):
                    return
                time.sleep(HEALTH_POLL_INTERVAL)
        raise LlamaServerError(
            f"llama.cpp server not ready after {timeout:.0f} s:\n{self.log_tail()}"
        )

    def _is_healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.base_url}/health").status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> LlamaServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"<LlamaServerProcess {self.model_path.name} {state} pid={self.pid} {self.base_url}>"


@atexit.register
def stop_all() -> None:
    """Stop every child still running (at exit, or before an exit that skips atexit)."""
    for process in list(_running):
        process.stop(timeout=5)
