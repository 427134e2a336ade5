"""/api/v0 on the real Gemma 270M, through a real server, on both engines (the `server` fixture).

MLX decodes ~8 tokens/s on this CPU: two short generations per engine."""

from __future__ import annotations

import json

import httpx

MODEL_FIELDS = {
    "id",
    "object",
    "type",
    "publisher",
    "arch",
    "compatibility_type",
    "quantization",
    "state",
    "max_context_length",
    "source",
}
STATS_FIELDS = {"tokens_per_second", "time_to_first_token", "generation_time", "stop_reason"}
RUNTIME_NAMES = {"mlx": "mlx", "llamacpp": "llama.cpp"}


def get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=30)


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def test_models_lists_every_stored_model_with_its_state(server, default_ids, model_id):
    response = get(server, "/api/v0/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    entries = {entry["id"]: entry for entry in listing["data"]}
    assert set(default_ids.values()) <= set(entries)
    for engine, stored_id in default_ids.items():
        entry = entries[stored_id]
        loaded = stored_id == model_id
        loaded_fields = {"loaded_context_length", "tool_format"} if loaded else set()
        assert set(entry) == MODEL_FIELDS | loaded_fields
        assert entry["state"] == ("loaded" if loaded else "not-loaded")
        assert (entry["object"], entry["type"], entry["publisher"]) == ("model", "llm", "google")
        assert entry["arch"] == "gemma3"
        assert entry["compatibility_type"] == ("gguf" if engine == "llamacpp" else "mlx")
        assert entry["max_context_length"] == 32768
        if loaded:
            assert 0 < entry["loaded_context_length"] <= 32768
            assert entry["tool_format"] == "gemma"  # Gemma 3: its architecture names it
    assert entries[default_ids["llamacpp"]]["quantization"] == "Q4_K_M"


def test_one_model_by_id_and_404_for_an_unknown_one(server, model_id):
    entry = get(server, f"/api/v0/models/{model_id}").json()
    assert entry["id"] == model_id and entry["state"] == "loaded"
    missing = get(server, "/api/v0/models/nobody/nothing")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "model_not_found" and "nobody/nothing" in error["message"]


def test_completion_carries_measured_stats_model_info_and_runtime(server, model_id):
    body = {"model": model_id, "prompt": "The capital of France is", "max_tokens": 6}
    result = post(server, "/api/v0/completions", {**body, "temperature": 0}).json()
    assert result["object"] == "text_completion"
    assert result["choices"][0]["text"].startswith(" the capital of")
    assert result["usage"]["completion_tokens"] == 6
    stats = result["stats"]
    assert set(stats) == STATS_FIELDS
    assert stats["stop_reason"] == "maxPredictedTokensReached"
    assert stats["time_to_first_token"] > 0 and stats["generation_time"] > 0
    naive_rate = result["usage"]["completion_tokens"] / stats["generation_time"]
    assert naive_rate / 2 <= stats["tokens_per_second"] <= naive_rate * 2
    info = result["model_info"]
    assert (info["arch"], info["format"]) == ("gemma3", "gguf" if "gguf" in model_id else "mlx")
    assert info["quant"] and info["context_length"] > 0
    runtime = result["runtime"]
    assert runtime["name"] == RUNTIME_NAMES[server.engine]
    assert runtime["version"] and runtime["supported_formats"]


def test_streamed_chat_ends_with_stats(server, model_id):
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": "Write one word."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/api/v0/chat/completions", json=body, timeout=120
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all("stats" not in chunk for chunk in chunks[:-1])
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert set(last["stats"]) == STATS_FIELDS and last["stats"]["time_to_first_token"] > 0
    assert last["model_info"]["arch"] == "gemma3"
    assert last["runtime"]["name"] == RUNTIME_NAMES[server.engine]
