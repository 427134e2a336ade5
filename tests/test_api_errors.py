"""Bad requests get OpenAI-shaped errors with the right status, and never take the server down."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.server import ServerProcess


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


MESSAGES = [{"role": "user", "content": "Hi"}]


def post(server, path: str, content) -> httpx.Response:
    """A body as JSON; a raw string is sent as is, labelled JSON as a client would."""
    if isinstance(content, (str, bytes)):
        headers = {"Content-Type": "application/json"}
        return httpx.post(f"{server.base_url}{path}", content=content, headers=headers, timeout=60)
    return httpx.post(f"{server.base_url}{path}", json=content, timeout=60)


def assert_error(response: httpx.Response, status: int, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", "{not json", None),
        ("/v1/chat/completions", "[1, 2]", None),
        ("/v1/chat/completions", {"messages": MESSAGES}, "model"),
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages"),
        ("/v1/completions", {"model": "m"}, "prompt"),
    ],
)
def test_malformed_requests_are_400(server, path, body, param):
    assert_error(post(server, path, body), 400, param)


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", 3),
        ("top_p", 1.5),
        ("top_p", 0),
        ("max_tokens", 0),
        ("max_tokens", 10**7),
        ("top_k", -1),
        ("min_p", 2),
        ("repeat_penalty", 0),
        ("presence_penalty", 5),
        ("logit_bias", {"999999999": 5}),
        ("logit_bias", {"abc": 5}),
        ("logit_bias", {"5": 300}),
    ],
)
def test_invalid_values_are_422(server, model_id, field, value):
    body = {"model": model_id, "messages": MESSAGES, "max_tokens": 1, field: value}
    assert_error(post(server, "/v1/chat/completions", body), 422, field)


def test_sdk_raises_typed_errors_and_server_survives(client, model_id):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model=model_id, messages=MESSAGES, temperature=3)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id, messages=[])
    ok = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=1)
    assert ok.usage.completion_tokens == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "path, param",
    [
        ("/v1/chat/completions", "messages"),
        ("/v1/completions", "prompt"),
        ("/v1/responses", "input"),
    ],
)
def test_a_prompt_that_fills_the_context_is_400_even_when_streamed(
    server, model_id, path, param, stream
):
    long_text = "word " * 40000  # past the model's whole 32768-token context
    inputs = {
        "/v1/chat/completions": {"messages": [{"role": "user", "content": long_text}]},
        "/v1/completions": {"prompt": long_text},
        "/v1/responses": {"input": long_text},
    }
    body = {"model": model_id, "stream": stream, **inputs[path]}
    response = post(server, path, body)
    assert_error(response, 400, param)
    assert response.json()["error"]["code"] == "context_length_exceeded"
    message = response.json()["error"]["message"]
    assert "32768-token context" in message and "the model's maximum context" in message


def test_images_to_a_text_model_are_400(server, model_id):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    body = {"model": model_id, "messages": [{"role": "user", "content": content}]}
    assert_error(post(server, "/v1/chat/completions", body), 400, "messages")


def test_unknown_route_is_openai_shaped_404(server):
    assert_error(httpx.get(f"{server.base_url}/v1/nothing-here"), 404)


def test_no_model_loaded_is_404_and_loading_is_503(models_dir, twin_ids):
    with ServerProcess(models_dir, model="nobody/missing", engine="mlx").start(
        wait_for_model=False
    ) as s:
        response = post(
            s, "/v1/chat/completions", {"model": "nobody/missing", "messages": MESSAGES}
        )
        assert_error(response, 404, "model")
        assert "no model is loaded" in response.json()["error"]["message"]
        assert httpx.get(f"{s.base_url}/v1/models").json()["data"] == []
    server = ServerProcess(models_dir, model=twin_ids["mlx"], engine="mlx")
    with server.start(wait_for_model=False):
        body = {"model": twin_ids["mlx"], "messages": MESSAGES, "max_tokens": 1}
        statuses, deadline = [], time.monotonic() + 300
        while not statuses or statuses[-1] == 503:
            assert time.monotonic() < deadline, f"still loading after 300 s: {statuses[-3:]}"
            response = post(server, "/v1/chat/completions", body)
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert_error(response, 503, "model")
                time.sleep(0.2)
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
