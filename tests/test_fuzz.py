"""A short schemathesis run against the real server (a tiny model, so generations are quick):
no 5xx and every answer as the OpenAPI document says. `scripts/fuzz.py` runs a long one."""

from __future__ import annotations

import httpx
import jsonschema
import pytest

from tests.fuzzing import fuzz
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz")
    record = make_tiny_gemma(store / "test" / "tiny-gemma")
    with ServerProcess(store, model=record.id, engine="mlx") as running:
        yield running, record.id


def test_openapi_document_lists_every_route_with_its_request_model(server):
    server, _ = server
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
    for path in ("/v1/responses", "/v1/embeddings", "/v1/rerank", "/api/v0/models/load", "/health"):
        assert path in document["paths"]


def test_short_fuzz_run_finds_no_server_error(server):
    server, _ = server
    report = fuzz(server.base_url, examples=12, seed=1)
    assert report.requests >= 12 * 10
    assert report.failures == [], "\n".join(report.failures[:5])
    assert not any(status >= 500 for status in report.statuses)


def _answer_calls(model: str) -> list[tuple[str, str, dict | None]]:
    chat = {"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
    return [
        ("post", "/v1/messages", chat),
        ("post", "/v1/messages/count_tokens", chat),
        ("post", "/v1/rerank", {"model": model, "query": "Hi", "documents": ["a", "b"]}),
        ("post", "/v1/responses", {"model": model, "input": "Hi", "max_output_tokens": 3}),
        ("post", "/api/v1/chat", {"model": model, "input": "Hi", "max_output_tokens": 3}),
        ("get", "/api/v1/models", None),
        ("post", "/api/v1/models/load", {"model": model, "identifier": "second-v1"}),
        ("post", "/api/v1/models/unload", {"instance_id": "second-v1"}),
        ("post", "/api/v1/models/download", {"model": model}),
        ("get", "/api/v0/loaded", None),
        ("post", "/api/v0/models/load", {"model": model, "identifier": "second-v0"}),
        ("post", "/api/v0/models/unload", {"identifier": "second-v0"}),
    ]


def test_answers_built_as_dicts_have_real_schemas_that_reject_a_missing_field(server):
    """The document's schema of each such answer accepts the real answer and refuses it without
    one of its required fields, so fuzzing checks these answers for real."""
    server, model = server
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    for method, path, body in _answer_calls(model):
        response = httpx.request(method, f"{server.base_url}{path}", json=body, timeout=120)
        assert response.status_code == 200, (path, response.text)
        answer = response.json()
        success = document["paths"][path][method]["responses"]["200"]["content"]
        validator = jsonschema.Draft202012Validator(
            {**success["application/json"]["schema"], "components": document["components"]}
        )
        validator.validate(answer)
        assert any(not validator.is_valid(_without(answer, key)) for key in answer), path


def _without(answer: dict, key: str) -> dict:
    return {name: value for name, value in answer.items() if name != key}
