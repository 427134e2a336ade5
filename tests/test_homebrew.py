"""What Linux can check of the Homebrew files: both are valid Ruby, and the formula's service
command line, as launchd would run it, starts a server that answers /health."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlxserve.models.defaults import DEFAULT_GGUF_ID, DEFAULT_MLX_ID, resolve_engine
from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
FORMULA = ROOT / "Formula" / "mlxserve.rb"
BREWFILE = ROOT / "Brewfile"
MLXSERVE = Path(sys.executable).parent / "mlxserve"  # the installed console script
needs_ruby = pytest.mark.skipif(
    shutil.which("ruby") is None, reason="ruby is not installed (Debian: apt-get install ruby)"
)


@needs_ruby
@pytest.mark.parametrize("path", [FORMULA, BREWFILE], ids=["formula", "Brewfile"])
def test_is_valid_ruby(path):
    result = subprocess.run(["ruby", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "Syntax OK", result.stderr


def service_block() -> str:
    match = re.search(r"^  service do\n(.*?)^  end$", FORMULA.read_text(), re.M | re.S)
    assert match, "the formula has no service block"
    return match.group(1)


def service_command(port: int) -> list[str]:
    """The `run [...]` array with opt_bin/"x" read as the installed x, and port 1234 replaced."""
    run = re.search(r"run \[(.*?)\]", service_block(), re.S)
    assert run, "the service block has no run array"
    command = []
    for item in (part.strip() for part in run.group(1).split(",")):
        binary = re.fullmatch(r'opt_bin/"([\w-]+)"', item)
        literal = re.fullmatch(r'"([^"]*)"', item)
        assert binary or literal, f"unexpected element in the service command: {item}"
        if binary:
            command.append(str(Path(sys.executable).parent / binary.group(1)))
        else:
            command.append(str(port) if literal.group(1) == "1234" else literal.group(1))
    return command


def test_service_keeps_the_server_alive_on_port_1234_with_logs_under_var():
    block = service_block()
    assert "keep_alive true" in block
    assert 'log_path var/"log/mlxserve.log"' in block
    assert 'error_log_path var/"log/mlxserve.log"' in block
    assert service_command(1234)[1:] == ["serve", "--port", "1234"]
    # launchd gives no HOME: the service names the user's, for the store and discovery
    assert "HOME: Dir.home" in block


def test_formula_installs_the_project_version():
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert f"/mlxserve-{version}.tar.gz" in FORMULA.read_text()
    assert 'depends_on "python@3.12"' in FORMULA.read_text()
    extras = re.search(
        r'pip install -q -e "\.\[(.+?)\]"', (ROOT / "scripts/install.sh").read_text()
    )
    installed = set(extras[1].split(",")) - {"test"}  # the README's install, less test tools
    assert f'"#{{buildpath}}[{",".join(sorted(installed))}]"' in FORMULA.read_text()
    assert 'brew "python@3.12"' in BREWFILE.read_text()


def test_service_command_line_starts_a_server_that_answers_health(tmp_path):
    port = free_port()
    command = service_command(port)
    assert command[0] == str(MLXSERVE) and MLXSERVE.exists()
    # As launchd runs it: a fresh home, so the default model is prepared there on first start.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXSERVE_")}
    env["MLXSERVE_HOME"] = str(tmp_path)
    default_model = DEFAULT_GGUF_ID if resolve_engine("auto") == "llamacpp" else DEFAULT_MLX_ID
    with open(tmp_path / "service.log", "w+") as log:
        service = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            health = wait_for_health(f"http://127.0.0.1:{port}/health", service, timeout=300)
            assert health["status"] == "ok" and health["loaded"] == [default_model]
        finally:
            service.send_signal(signal.SIGTERM)  # what `brew services stop` sends
            assert service.wait(30) == 0, (tmp_path / "service.log").read_text()


def wait_for_health(url: str, process: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited with {process.returncode}"
        try:
            health = httpx.get(url, timeout=2).json()
            if health["loaded"]:
                return health
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url} in {timeout} s")
