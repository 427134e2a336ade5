"""Node's `openai` and `ollama` packages, second real clients: a streamed chat reply, and
Ollama's chat and generate, whole and streamed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"
PACKAGES = ("openai", "ollama")


@pytest.fixture(scope="session")
def node_client_dir() -> Path:
    if shutil.which("npm") is None or shutil.which("node") is None:
        if os.environ.get("CI"):  # CI installs Node (.ci/run): a skip would hide a lost client
            pytest.fail("node and npm are missing in CI")
        pytest.skip("npm is not installed; the Node client test needs node and npm")
    if not all((NODE_DIR / "node_modules" / name).is_dir() for name in PACKAGES):
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


def run_script(folder, script: str, *args: str) -> dict:
    """A Node client script's one line of JSON."""
    done = subprocess.run(
        ["node", script, *args], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_openai_package_streams_a_chat_reply(node_client_dir, server, model_id, client):
    result = run_script(node_client_dir, "stream_chat.mjs", f"{server.base_url}/v1", model_id)
    expected = client.chat.completions.create(
        model=model_id,
        temperature=0,
        max_tokens=5,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello."},
        ],
    )
    assert result["text"] and result["chunks"] >= 3
    assert result["usage"]["prompt_tokens"] == expected.usage.prompt_tokens
    length_stop = result["finishReason"] == "length"
    assert (result["usage"]["completion_tokens"] == 5) == length_stop
    assert model_id in result["models"]
    if server.engine == "mlx":
        # llama.cpp's greedy text can vary with which slot's prompt cache serves a request.
        assert result["text"] == expected.choices[0].message.content


def test_node_ollama_package_streams_what_it_gets_whole(node_client_dir, server, model_id):
    result = run_script(node_client_dir, "ollama_chat.mjs", server.base_url, model_id)
    for call in ("chat", "generate"):
        whole, streamed = result[call], result[f"{call}Stream"]
        assert whole["text"] and streamed["text"] == whole["text"]
        assert streamed["chunks"] >= 2 and not streamed["doneEarly"]
        for final in (whole, streamed):
            assert final["done"] is True and final["done_reason"] == "length"
            assert final["eval_count"] == 3 and final["eval_duration"] > 0
        assert streamed["prompt_eval_count"] == whole["prompt_eval_count"] > 3
