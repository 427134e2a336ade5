"""Models load with their whole trained context when memory allows; a prompt beyond the loaded
context but within the model's maximum reloads the model with a longer one instead of failing,
and where it cannot, the 400 says why (--context-length, memory, the model's maximum)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from mlxserve.models import memory
from mlxserve.models.store import find_model
from tests.conftest import ENGINES
from tests.server import ServerProcess


def long_prompt(words: int) -> str:
    return " ".join(f"item{n}" for n in range(words))


def model_entry(base_url: str, model: str) -> dict:
    return httpx.get(f"{base_url}/api/v0/models/{model}", timeout=30).json()


def chat(base_url: str, model: str, text: str):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=model, messages=messages, max_tokens=2)


def test_the_default_model_loads_with_its_whole_context(server, model_id):
    entry = model_entry(server.base_url, model_id)
    assert entry["max_context_length"] == 32768
    assert entry["loaded_context_length"] == entry["max_context_length"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_prompt_beyond_the_loaded_context_reloads_the_model(models_dir, twin_ids, engine):
    model = twin_ids[engine]  # Gemma 3's context of 32768, on tiny weights quick to read and load
    with ServerProcess(models_dir, model=model, engine=engine) as running:
        load = {"model": model, "context_length": 512, "tool_format": "hermes"}
        httpx.post(f"{running.base_url}/api/v0/models/unload", json={"model": model}, timeout=60)
        loaded = httpx.post(f"{running.base_url}/api/v0/models/load", json=load, timeout=300)
        assert loaded.json()["context_length"] == 512
        reply = chat(running.base_url, model, long_prompt(250))
        assert reply.usage.prompt_tokens > 512
        grown = model_entry(running.base_url, model)
        assert (grown["loaded_context_length"], grown["tool_format"]) == (32768, "hermes")
        assert "reloading" in running.log_text()


def test_a_context_set_by_the_server_is_not_grown(models_dir, default_ids):
    model = default_ids["llamacpp"]
    args = ["--context-length", "512"]
    with ServerProcess(models_dir, model=model, engine="llamacpp", extra_args=args) as running:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(running.base_url, model, long_prompt(250))
        assert model_entry(running.base_url, model)["loaded_context_length"] == 512
    error = caught.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "--context-length" in error["message"]


def test_short_of_memory_the_largest_context_that_fits_and_a_clear_400(models_dir, default_ids):
    model = default_ids["llamacpp"]
    record = find_model(Path(models_dir), model)
    # Memory for about 6,000 tokens of context in every slot, far from the model's 32,768.
    limit = int(memory.estimate_memory(record, 6000).total_bytes / memory.CONTEXT_MEMORY_SHARE)
    env = {memory.MEMORY_LIMIT_ENV: str(limit)}
    with ServerProcess(models_dir, model=model, engine="llamacpp", env=env) as running:
        context = model_entry(running.base_url, model)["loaded_context_length"]
        assert 4096 <= context < 6000
        assert "the largest context that fits" in running.log_text()
        with pytest.raises(openai.BadRequestError) as caught:
            chat(running.base_url, model, long_prompt(2500))
    message = caught.value.body["message"]
    assert f"{context}-token context" in message and "memory allows" in message
    assert "--context-length" in message
