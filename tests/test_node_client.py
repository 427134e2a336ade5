"""The Node `openai` package, a second real client, streams a chat reply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_client_dir() -> Path:
    if shutil.which("npm") is None or shutil.which("node") is None:
        if os.environ.get("CI"):  # CI installs Node (.ci/run): a skip would hide a lost client
            pytest.fail("node and npm are missing in CI")
        pytest.skip("npm is not installed; the Node client test needs node and npm")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


def test_node_openai_package_streams_a_chat_reply(node_client_dir, server, model_id, client):
    done = subprocess.run(
        ["node", "stream_chat.mjs", f"{server.base_url}/v1", model_id],
        cwd=node_client_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
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
