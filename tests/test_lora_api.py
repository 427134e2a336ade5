"""LoRA adapters through a real server: imported with `mlxserve convert --base`, listed as
`base@adapter` with type "adapter", requested by `model`, and unloaded with the base kept."""

from __future__ import annotations

import json

import httpx
import pytest

from mlxserve.cli.convert import main as convert
from mlxserve.models.adapter_models import LoadedAdapter
from mlxserve.models.loaded import LoadedModel, RegistryError
from tests.lora_adapters import make_adapter, mlx_lm_greedy, write_peft
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

BASE = "local/tiny"
ADAPTER = f"{BASE}@formal"
PROMPT = "w5 w6 w7 w8 w9 w10 w11"
TOKENS = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    models_dir = tmp_path_factory.mktemp("store")
    base = make_tiny_gemma(models_dir / "local" / "tiny")
    folder = make_adapter(tmp_path_factory.mktemp("trained") / "formal", 7)
    assert convert([str(folder), "--base", BASE, "--models-dir", str(models_dir)]) == 0
    peft = write_peft(folder, tmp_path_factory.mktemp("trained") / "formal-peft")
    assert convert([str(peft), "--base", BASE, "--models-dir", str(models_dir)]) == 0
    return models_dir, base, folder


@pytest.fixture(scope="module")
def server(store):
    with ServerProcess(store[0], model=BASE) as running:
        yield running


def complete(server: ServerProcess, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0}
    body["repeat_penalty"] = 1.0  # mlx-lm's generate applies none
    return httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)


def models(server: ServerProcess, path: str) -> dict[str, dict]:
    entries = httpx.get(f"{server.base_url}{path}", timeout=30).json()["data"]
    return {entry["id"]: entry for entry in entries}


def test_the_imported_adapter_is_listed_beside_its_base(server, store):
    listed = models(server, "/api/v0/models")
    assert listed[ADAPTER]["type"] == "adapter"
    assert listed[BASE]["type"] == "llm"
    assert (store[1].directory / "adapters" / "formal" / "adapters.safetensors").is_file()


def test_a_request_names_the_adapter_and_gets_mlx_lm_tokens(server, store):
    from mlx_lm import load

    response = complete(server, ADAPTER)
    assert response.status_code == 200, response.text
    text = response.json()["choices"][0]["text"]
    produced = response.json()["usage"]["completion_tokens"]
    tokenizer = load(str(store[1].directory))[1]
    reference = mlx_lm_greedy(store[1].directory, store[2], PROMPT, TOKENS)
    shown = [token for token in reference[:produced] if token not in tokenizer.eos_token_ids]
    assert text == tokenizer.decode(shown)
    assert text != complete(server, BASE).json()["choices"][0]["text"]
    assert models(server, "/v1/models")[ADAPTER]["type"] == "adapter"


def test_an_imported_peft_adapter_answers_as_the_same_mlx_lm_adapter(server, store):
    peft_id = f"{BASE}@formal-peft"
    assert models(server, "/api/v0/models")[peft_id]["type"] == "adapter"
    stored = store[1].directory / "adapters" / "formal-peft" / "adapter_model.safetensors"
    assert stored.is_file()
    texts = [complete(server, model).json()["choices"][0]["text"] for model in (ADAPTER, peft_id)]
    assert texts[0] == texts[1] != complete(server, BASE).json()["choices"][0]["text"]


def test_a_dora_adapter_is_refused_at_import_naming_the_option(store, tmp_path, capsys):
    folder = write_peft(store[2], tmp_path / "dora")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    assert convert([str(folder), "--base", BASE, "--models-dir", str(store[0])]) != 0
    assert "use_dora" in capsys.readouterr().err
    assert not (store[1].directory / "adapters" / "dora").exists()


def test_unloading_the_adapter_keeps_the_base_answering(server):
    assert complete(server, ADAPTER).status_code == 200
    base_text = complete(server, BASE).json()["choices"][0]["text"]
    unload = {"identifier": ADAPTER}
    response = httpx.post(f"{server.base_url}/api/v0/models/unload", json=unload, timeout=30)
    assert response.status_code == 200, response.text
    loaded = models(server, "/v1/models")
    assert ADAPTER not in loaded and BASE in loaded
    assert complete(server, BASE).json()["choices"][0]["text"] == base_text
    load = httpx.post(f"{server.base_url}/api/v0/models/load", json={"model": ADAPTER}, timeout=60)
    assert load.status_code == 200, load.text
    assert models(server, "/v1/models")[ADAPTER]["type"] == "adapter"


def test_an_unknown_adapter_is_a_404_naming_model(server):
    response = complete(server, f"{BASE}@missing")
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "model"


def test_chat_and_ollama_routes_serve_the_adapter(server):
    body = {"model": ADAPTER, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    chat = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert chat.status_code == 200, chat.text
    for route in ("/api/tags", "/api/ps", "/api/v1/models"):
        assert httpx.get(f"{server.base_url}{route}", timeout=30).status_code == 200, route


def test_an_adapter_request_counts_as_its_base_models_too(store):
    """So a TTL never unloads the base under a running adapter request, and the two share the
    base's queue limit."""
    base = LoadedModel(store[1], engine=None, identifier=BASE)
    adapter = LoadedAdapter(store[1], engine=None, identifier=ADAPTER, base=base)
    release = adapter.admit()
    assert (adapter.active_requests, base.active_requests) == (1, 1)
    release()
    release()  # counted out once
    assert (adapter.active_requests, base.active_requests) == (0, 0)
    base.max_requests = 0
    with pytest.raises(RegistryError, match="queue|limit"):
        adapter.admit()
    assert (adapter.active_requests, base.active_requests) == (0, 0)
