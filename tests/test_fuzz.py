"""A short schemathesis run against the real server (a tiny model, so generations are quick):
no 5xx and every answer as the OpenAPI document says. `scripts/fuzz.py` runs a long one."""

from __future__ import annotations

import httpx
import pytest

from tests.fuzzing import fuzz
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz")
    record = make_tiny_gemma(store / "test" / "tiny-gemma")
    with ServerProcess(store, model=record.id, engine="mlx") as running:
        yield running


def test_openapi_document_lists_every_route_with_its_request_model(server):
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    schema = document["components"]["schemas"]["ChatCompletionRequest"]
    assert "messages" in schema["required"] and schema["properties"]["temperature"]
    answer = chat["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ChatCompletion"}
    completion = document["components"]["schemas"]["ChatCompletion"]
    assert {"choices", "usage", "model"} <= set(completion["required"])
    assert "/api/v0/models/{model_id}" in document["paths"]
    for path in ("/v1/responses", "/v1/embeddings", "/api/v0/models/load", "/health"):
        assert path in document["paths"]


def test_short_fuzz_run_finds_no_server_error(server):
    report = fuzz(server.base_url, examples=12, seed=1)
    assert report.requests >= 12 * 10
    assert report.failures == [], "\n".join(report.failures[:5])
    assert not any(status >= 500 for status in report.statuses)
