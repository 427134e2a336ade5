"""Secrets in URLs stay out of the server's log and its error texts: a signed image URL's query
string and user info, fetched for a real request by a real server."""

from __future__ import annotations

import functools
import http.server
import threading

import httpx
import pytest

from mlxserve.redact import scrub
from tests.server import ServerProcess
from tests.tiny_vision import make_tiny_vlm, png_bytes

SECRET = "sig-5ecret-9f31"


@pytest.fixture(scope="module")
def image_host(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "blue.png").write_bytes(png_bytes((0, 0, 255)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{host.server_address[1]}"
    host.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    make_tiny_vlm(store / "test" / "gemma3", "gemma3")
    extra = ("--allow-remote-images", "--image-allowed-hosts", "127.0.0.1")
    with ServerProcess(store, model="test/gemma3", extra_args=extra) as running:
        yield running


def ask_about(server: ServerProcess, url: str) -> httpx.Response:
    image = {"type": "image_url", "image_url": {"url": url}}
    content = [image, {"type": "text", "text": "w1"}]
    body = {"model": "test/gemma3", "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": content}]}  # fmt: skip
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)


def test_a_fetched_image_url_is_logged_without_its_query(server, image_host):
    reply = ask_about(server, f"http://{image_host}/blue.png?X-Signature={SECRET}")
    assert reply.status_code == 200, reply.text
    log = server.log_text()
    assert f"GET http://{image_host}/blue.png?<redacted>" in log  # each fetch is logged
    assert SECRET not in log


def test_a_failed_fetch_names_the_url_without_its_secrets(server, image_host):
    reply = ask_about(server, f"http://user:{SECRET}@{image_host}/gone.png?token={SECRET}")
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "404" in message and f"{image_host}/gone.png" in message
    assert SECRET not in message
    assert SECRET not in server.log_text()


@pytest.mark.parametrize(
    "text, shown",
    [
        ("GET https://a.example/p?sig=S&x=1 failed", "GET https://a.example/p?<redacted> failed"),
        ("'http://u:S@h:8/p#S'", "'http://h:8/p?<redacted>'"),
        ("Authorization: Bearer sk-S.1", "Authorization: Bearer <redacted>"),
        ("file:///tmp/a, data:image/png;base64,QQ==", "file:///tmp/a, data:image/png;base64,QQ=="),
    ],
)  # fmt: skip
def test_scrub_hides_query_strings_user_info_and_bearer_tokens(text, shown):
    assert scrub(text) == shown
