"""The /api/v0 routes, the request log and the model lifecycle, in-process on tiny random MLX
models (fast); the same features on the real model and a real server are in test_native_api.py
and test_lifecycle.py."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time

import pytest

from mlxserve import logstream
from mlxserve.api.app import AppConfig, create_app
from mlxserve.api.state import server_state
from mlxserve.models.options import RegistryOptions
from mlxserve.models.store import write_manifest
from tests.test_native_api import MODEL_FIELDS
from tests.tiny_models import make_tiny_gemma

TINY_IDS = ("test/tiny-a", "test/tiny-b")
CHAT = {"messages": [{"role": "user", "content": "w5 w6"}], "max_tokens": 4, "temperature": 0}
# Gemma's turn format from the built-in template, with the tokenizer's BOS string.
CHAT_PROMPT = "<bos><start_of_turn>user\nw5 w6<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-store")
    for seed, model_id in enumerate(TINY_IDS):
        directory = root / model_id
        record = make_tiny_gemma(directory, seed=seed)
        write_manifest(directory, dataclasses.replace(record, id=model_id, path=str(directory)))
    return root


def run_app(store, test, **options):
    """Run `test(client, app)` against an app serving the tiny store, then shut it down."""

    async def main():
        app = create_app(AppConfig(models_dir=store, registry=RegistryOptions("mlx", **options)))
        async with app.test_app() as test_app:
            return await test(test_app.test_client(), app)

    return asyncio.run(main())


async def models_by_id(client) -> dict[str, dict]:
    response = await client.get("/api/v0/models")
    return {entry["id"]: entry for entry in (await response.get_json())["data"]}


def test_models_lists_stored_models_with_load_state(store):
    async def test(client, app):
        before = await models_by_id(client)
        load = await client.post("/api/v0/models/load", json={"model": TINY_IDS[0], "ttl": 60})
        loaded = await load.get_json()
        after = await models_by_id(client)
        single = await client.get(f"/api/v0/models/{TINY_IDS[0]}")
        missing = await client.get("/api/v0/models/nobody/nothing")
        missing_error = (missing.status_code, (await missing.get_json())["error"]["code"])
        return before, load.status_code, loaded, after, await single.get_json(), missing_error

    before, status, loaded, after, single, missing = run_app(store, test)
    assert set(before) == set(TINY_IDS)
    for entry in before.values():
        assert set(entry) == MODEL_FIELDS
        assert entry["state"] == "not-loaded" and entry["object"] == "model"
        assert (entry["type"], entry["publisher"], entry["arch"]) == ("llm", "test", "gemma3")
        assert (entry["compatibility_type"], entry["quantization"]) == ("mlx", "f32")
        assert entry["max_context_length"] == 512
    assert status == 200 and loaded["engine"] == "mlx" and loaded["ttl"] == 60
    assert after[TINY_IDS[0]]["state"] == "loaded"
    assert after[TINY_IDS[0]]["loaded_context_length"] == 512  # the default 4096, capped
    assert after[TINY_IDS[1]]["state"] == "not-loaded"
    assert single == after[TINY_IDS[0]]
    assert missing == (404, "model_not_found")


def test_both_load_routes_share_their_options_and_guard_instance_ids(store):
    async def test(client, app):
        async def load(path: str, **body):
            response = await client.post(path, json=body)
            return response.status_code, await response.get_json()

        first = await load("/api/v0/models/load", model=TINY_IDS[0], identifier="shared")
        taken = [
            await load(path, model=TINY_IDS[1], identifier="shared")
            for path in ("/api/v0/models/load", "/api/v1/models/load")
        ]
        again = await load("/api/v0/models/load", model=TINY_IDS[0], identifier="shared")
        v1 = await load("/api/v1/models/load", model=TINY_IDS[1], tool_format="gemma")
        unknown = await load("/api/v1/models/load", model=TINY_IDS[1], tool_format="nobody")
        formats = {m.identifier: m.tool_format for m in server_state(app).registry.loaded.values()}
        return first, taken, again, v1, unknown, formats

    first, taken, again, v1, unknown, formats = run_app(store, test)
    assert first[0] == 200 and not first[1]["already_loaded"]
    for status, body in taken:
        assert (status, body["error"]["code"]) == (409, "instance_id_taken")
        assert body["error"]["param"] == "identifier" and TINY_IDS[0] in body["error"]["message"]
    assert again[0] == 200 and again[1]["already_loaded"]
    assert v1[0] == 200 and v1[1]["instance_id"] == TINY_IDS[1]
    assert unknown[0] == 422 and unknown[1]["error"]["param"] == "tool_format"
    assert formats == {"shared": "", TINY_IDS[1]: "gemma"}


def test_native_chat_adds_stats_model_info_and_runtime(store):
    async def test(client, app):
        body = {"model": TINY_IDS[0], **CHAT}
        full = await (await client.post("/api/v0/chat/completions", json=body)).get_json()
        stream = await client.post("/api/v0/chat/completions", json={**body, "stream": True})
        return full, (await stream.get_data()).decode()

    full, stream = run_app(store, test)
    assert full["object"] == "chat.completion" and full["usage"]["completion_tokens"] >= 1
    stats = full["stats"]
    assert set(stats) == {
        "tokens_per_second",
        "time_to_first_token",
        "generation_time",
        "stop_reason",
    }
    assert stats["time_to_first_token"] > 0 and stats["stop_reason"] in (
        "eosFound",
        "maxPredictedTokensReached",
    )
    assert full["model_info"] == {
        "arch": "gemma3",
        "quant": "f32",
        "format": "mlx",
        "context_length": 512,
    }
    assert full["runtime"]["name"] == "mlx" and full["runtime"]["version"]
    chunks = [line for line in stream.splitlines() if line.startswith("data: {")]
    assert "stats" not in chunks[0] and '"stats"' in chunks[-1] and '"runtime"' in chunks[-1]


def test_every_generation_is_published_with_its_formatted_prompt(store):
    async def test(client, app):
        with logstream.bus.subscribe() as subscription:
            body = {"model": TINY_IDS[0], **CHAT}
            reply = await (await client.post("/v1/chat/completions", json=body)).get_json()
            records = [subscription.queue.get_nowait() for _ in range(2)]
        return reply, records, subscription.queue.empty()

    reply, (request, response), drained = run_app(store, test)
    assert drained
    assert request["type"] == "request" and request["id"] == reply["id"]
    assert request["prompt"] == CHAT_PROMPT
    assert (request["model"], request["endpoint"]) == (TINY_IDS[0], "/v1/chat/completions")
    assert request["sampling"]["temperature"] == 0 and request["max_tokens"] == 4
    assert response["type"] == "response" and response["id"] == reply["id"]
    assert response["output"] == reply["choices"][0]["message"]["content"]
    assert response["stats"]["completion_tokens"] == reply["usage"]["completion_tokens"]
    assert logstream.bus.subscriber_count == 0


def test_request_ttl_unloads_the_jit_loaded_model_once_idle(store):
    async def test(client, app):
        body = {"model": TINY_IDS[1], "prompt": "w1", "max_tokens": 1, "ttl": 1}
        assert (await client.post("/v1/completions", json=body)).status_code == 200
        loaded = (await models_by_id(client))[TINY_IDS[1]]["state"]
        started = time.monotonic()
        while TINY_IDS[1] in server_state(app).registry.loaded and time.monotonic() - started < 5:
            await asyncio.sleep(0.1)
        return loaded, time.monotonic() - started, (await models_by_id(client))[TINY_IDS[1]]

    loaded_state, waited, after = run_app(store, test)
    assert loaded_state == "loaded"
    assert 0.5 < waited < 3.5  # a 1 s TTL, checked every second
    assert after["state"] == "not-loaded"


def test_max_loaded_evicts_the_least_recently_used_idle_model(store):
    async def test(client, app):
        for model_id in TINY_IDS:
            body = {"model": model_id, "prompt": "w1", "max_tokens": 1}
            assert (await client.post("/v1/completions", json=body)).status_code == 200
        return sorted(server_state(app).registry.loaded)

    assert run_app(store, test, max_loaded=1) == [TINY_IDS[1]]


def test_a_model_that_does_not_fit_in_memory_is_refused(store, monkeypatch):
    monkeypatch.setenv("MLXSERVE_MEMORY_LIMIT_BYTES", str(64 * 1024**2))

    async def test(client, app):
        response = await client.post("/api/v0/models/load", json={"model": TINY_IDS[0]})
        return (
            response.status_code,
            await response.get_json(),
            sorted(server_state(app).registry.loaded),
        )

    status, body, loaded = run_app(store, test)
    assert status == 507 and loaded == []
    assert body["error"]["code"] == "insufficient_memory"
    assert re.search(r"needs ~0\.2\d GiB, only 0\.06 GiB available", body["error"]["message"])


def test_load_and_unload_errors_are_openai_shaped(store):
    async def test(client, app):
        answers = [
            await client.post("/api/v0/models/load", json={}),
            await client.post("/api/v0/models/load", json={"model": "nobody/nothing"}),
            await client.post("/api/v0/models/load", json={"model": TINY_IDS[0], "ttl": -1}),
            await client.post("/api/v0/models/unload", json={"model": TINY_IDS[0]}),
        ]
        return [(a.status_code, (await a.get_json())["error"]["param"]) for a in answers]

    assert run_app(store, test) == [(400, "model"), (404, "model"), (422, "ttl"), (404, "model")]
