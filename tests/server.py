"""Start the real `mlxserve serve` as a child process on a free port, as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

from mlxserve.engine.llamacpp.process import LAUNCHER_PATH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        models_dir: Path,
        *,
        model: str | None = None,
        engine: str = "mlx",
        extra_args: Sequence[str] = (),
        env: dict | None = None,
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.engine, self.model_id = engine, model
        self.args = [
            sys.executable,
            "-m",
            "mlxserve.cli.main",
            "serve",
            "--port",
            str(self.port),
            "--models-dir",
            str(models_dir),
            "--engine",
            engine,
            *extra_args,
        ]
        if model:
            self.args += ["--model", model]
        # The machine's own Hugging Face cache and LM Studio folder stay out of the tests, and
        # downloads go nowhere (port 9 refuses) unless a test points HF_ENDPOINT somewhere.
        offline = {"MLXSERVE_NO_DISCOVER": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
        self.env = {**os.environ, **offline, **(env or {})}
        self.log = tempfile.NamedTemporaryFile(
            "w+", prefix="mlxserve-", suffix=".log", delete=False
        )
        self.process: subprocess.Popen | None = None

    def start(self, wait_for_model: bool = True, timeout: float = 300) -> ServerProcess:
        self.process = subprocess.Popen(
            self.args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            health = self.health()
            if health is not None and (health["loaded"] or not wait_for_model):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def health(self) -> dict | None:
        """The server's status with model details (sending its API key, if it has one)."""
        args = self.args
        key = args[args.index("--api-key") + 1] if "--api-key" in args else None
        headers = {"x-api-key": key} if key else {}
        try:
            return httpx.get(f"{self.base_url}/health", headers=headers, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self if self.process else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def llama_children(server: ServerProcess) -> set[int]:
    """The pids of the server's llama.cpp children (the launcher that runs each one)."""
    found = psutil.Process(server.process.pid).children()
    return {child.pid for child in found if str(LAUNCHER_PATH) in " ".join(child.cmdline())}
