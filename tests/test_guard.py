"""Browser-origin safety and the API key, against the real server: what a web page, a DNS
rebinding attack or a script without the key can and cannot do."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

MODEL = "test/tiny-gemma"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "w1 w2"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    models = tmp_path_factory.mktemp("guard")
    make_tiny_gemma(models / "test" / "tiny-gemma")
    return models


@pytest.fixture(scope="module")
def default_server(store):
    with ServerProcess(store, model=MODEL, engine="mlx") as server:
        yield server


@pytest.fixture(scope="module")
def locked_server(store):
    args = ["--api-key", "s3cret", "--cors", "https://app.example", "--allowed-hosts", "llm.lan"]
    args += ["--max-body-bytes", "4096"]
    with ServerProcess(store, model=MODEL, engine="mlx", extra_args=args) as server:
        yield server


def post(server, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", headers=headers or {}, timeout=60, **kwargs)


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_cross_site_simple_post_is_refused(default_server, content_type):
    reply = post(
        default_server,
        "/v1/chat/completions",
        {"Content-Type": content_type, "Origin": "https://evil.example"},
        content=json.dumps(CHAT),
    )
    assert reply.status_code == 403 and error_code(reply) == "origin_not_allowed"
    same = post(
        default_server,
        "/v1/chat/completions",
        {"Content-Type": content_type},
        content=json.dumps(CHAT),
    )
    assert same.status_code == 415 and error_code(same) == "unsupported_media_type"


def test_a_foreign_origin_cannot_unload_and_loopback_origins_can_call(default_server):
    evil = {"Origin": "https://evil.example"}
    reply = post(default_server, "/api/v0/models/unload", evil, json={"identifier": MODEL})
    assert reply.status_code == 403
    assert MODEL in default_server.health()["loaded"]
    local = post(
        default_server, "/v1/chat/completions", {"Origin": "http://localhost:3000"}, json=CHAT
    )
    assert local.status_code == 200 and "Access-Control-Allow-Origin" not in local.headers
    assert post(default_server, "/v1/chat/completions", json=CHAT).status_code == 200  # no Origin


def test_dns_rebinding_hosts_are_refused(default_server, locked_server):
    key = {"x-api-key": "s3cret"}
    for server in (default_server, locked_server):
        url = f"{server.base_url}/v1/models"
        reply = httpx.get(url, headers={"Host": "evil.example", **key})
        assert reply.status_code == 403 and error_code(reply) == "host_not_allowed"
        local = httpx.get(url, headers={"Host": f"localhost:{server.port}", **key})
        assert local.status_code == 200
    lan = {"Host": "llm.lan:1234", **key}
    assert httpx.get(f"{locked_server.base_url}/v1/models", headers=lan).status_code == 200
    assert httpx.get(f"{default_server.base_url}/v1/models", headers=lan).status_code == 403


def test_every_route_of_the_openapi_document_needs_the_key(locked_server):
    url, key = locked_server.base_url, {"x-api-key": "s3cret"}
    document = httpx.get(f"{url}/openapi.json", headers=key).json()
    assert httpx.get(f"{url}/openapi.json").status_code == 401
    routes = [
        (method, re.sub(r"\{[^}]+\}", "x", path))
        for path, methods in document["paths"].items()
        for method in methods
        if path != "/health"
    ]
    families = {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/v0/models",
                "/api/v1/chat", "/v1/embeddings", "/metrics", "/api/v0/log/stream"}  # fmt: skip
    assert families <= {path for _, path in routes} and len(routes) >= 20
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
            refused = httpx.request(method, f"{url}{path}", headers=headers, json={}, timeout=30)
            assert refused.status_code == 401, (method, path, headers, refused.text)


def test_api_key_as_bearer_or_x_api_key(locked_server):
    url = locked_server.base_url
    for path in ("/v1/models", "/api/v0/models", "/api/v0/loaded"):
        assert httpx.get(f"{url}{path}").status_code == 401
        assert (
            httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert (
            httpx.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        )
        assert httpx.get(f"{url}{path}", headers={"x-api-key": "s3cret"}).status_code == 200
    assert post(locked_server, "/v1/chat/completions", json=CHAT).status_code == 401
    assert (
        post(locked_server, "/v1/chat/completions", {"x-api-key": "s3cret"}, json=CHAT).status_code
        == 200
    )
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # liveness, no model details
    assert MODEL in httpx.get(f"{url}/health", headers={"x-api-key": "s3cret"}).json()["loaded"]


def test_cors_allowlist_and_private_network_preflight(locked_server):
    url = f"{locked_server.base_url}/v1/chat/completions"
    preflight = httpx.options(
        url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert preflight.headers["Access-Control-Allow-Private-Network"] == "true"
    allowed = httpx.post(
        url, json=CHAT, headers={"Origin": "https://app.example", "x-api-key": "s3cret"}, timeout=60
    )
    assert (
        allowed.status_code == 200
        and allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    )
    other = httpx.options(
        url, headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"}
    )
    assert other.status_code == 403 and "Access-Control-Allow-Origin" not in other.headers


def test_cors_env_words_and_star(store):
    with ServerProcess(store, model=MODEL, engine="mlx", env={"MLXSERVE_CORS": "0"}) as off:
        reply = httpx.get(f"{off.base_url}/v1/models", headers={"Origin": "https://any.example"})
        assert reply.status_code == 403
    with ServerProcess(store, model=MODEL, engine="mlx", extra_args=["--cors"]) as anyone:
        reply = httpx.get(f"{anyone.base_url}/v1/models", headers={"Origin": "https://any.example"})
        assert (
            reply.status_code == 200
            and reply.headers["Access-Control-Allow-Origin"] == "https://any.example"
        )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v0/chat/completions"])
def test_an_enormous_top_k_is_a_422_not_a_500(default_server, path):
    reply = post(default_server, path, json={**CHAT, "top_k": 1e30})
    assert reply.status_code == 422 and reply.json()["error"]["param"] == "top_k"


def test_a_body_over_the_limit_is_a_413(locked_server):
    big = {**CHAT, "messages": [{"role": "user", "content": "w1 " * 3000}]}
    reply = post(locked_server, "/v1/chat/completions", {"x-api-key": "s3cret"}, json=big)
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "invalid_request_error"
    assert (
        post(locked_server, "/v1/chat/completions", {"x-api-key": "s3cret"}, json=CHAT).status_code
        == 200
    )


def test_the_servers_own_page_may_call_it_on_an_allowed_host(default_server, locked_server):
    """The web page's requests carry its own origin: allowed once the Host passed its check, so
    a rebinding name (its origin also "own") is still refused."""
    own = {"Host": "llm.lan:1234", "Origin": "http://llm.lan:1234", "x-api-key": "s3cret"}
    assert post(locked_server, "/v1/chat/completions", own, json=CHAT).status_code == 200
    rebound = {"Host": "evil.example:1234", "Origin": "http://evil.example:1234"}
    reply = post(default_server, "/v1/chat/completions", rebound, json=CHAT)
    assert reply.status_code == 403 and error_code(reply) == "host_not_allowed"
    page = httpx.get(f"{locked_server.base_url}/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "<title>mlxserve</title>" in page.text  # without the key
    assert httpx.get(f"{locked_server.base_url}/").status_code == 401  # Ollama's answer needs it


def test_any_host_allowed_never_makes_a_foreign_origin_own(store):
    """With `--allowed-hosts *` a rebinding name passes the Host check; its origin, though the
    same as that Host, is still foreign."""
    args = ["--allowed-hosts", "*"]
    with ServerProcess(store, model=MODEL, engine="mlx", extra_args=args) as server:
        rebound = {"Host": "evil.example:1234", "Origin": "http://evil.example:1234"}
        reply = post(server, "/v1/chat/completions", rebound, json=CHAT)
        assert reply.status_code == 403 and error_code(reply) == "origin_not_allowed"
        plain = post(server, "/v1/chat/completions", {"Host": "evil.example:1234"}, json=CHAT)
        assert plain.status_code == 200
