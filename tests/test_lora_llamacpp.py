"""LoRA adapters on the llama.cpp engine: an adapter stored beside a GGUF model is written as a
GGUF LoRA file, which the model's llama.cpp child starts with and applies to the requests that
name it alone."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from mlxserve.cli.convert import main as convert
from tests.lora_adapters import GEMMA_270M_SHAPES, make_adapter, write_peft
from tests.server import ServerProcess

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The three primary colors are",
]
TOKENS = 12
NEAR_TIE = 0.2  # nats: as between the two engines without an adapter
ADAPTER = dict(rank=8, scale=2.0, layers=6, total_layers=18, shapes=GEMMA_270M_SHAPES)


def linked_copy(models_dir: Path, model_id: str, store: Path) -> Path:
    """The model in a store of the test's own, its files linked, so adapters stored beside it
    leave the shared store alone."""
    target = store / model_id
    target.mkdir(parents=True)
    for file in (models_dir / model_id).iterdir():
        if file.is_file():
            os.symlink(file, target / file.name)
    return target


@pytest.fixture(scope="module")
def store(models_dir, default_ids, tmp_path_factory):
    store = tmp_path_factory.mktemp("lora-gguf")
    gguf, mlx = (linked_copy(models_dir, default_ids[e], store) for e in ("llamacpp", "mlx"))
    trained = make_adapter(store / "trained", 5, spread=0.05, **ADAPTER)
    peft = write_peft(trained, store / "peft")  # llama.cpp takes PEFT's layout too
    id_args = ["--base", default_ids["llamacpp"], "--id", "tuned", "--models-dir", str(store)]
    assert convert([str(peft), *id_args]) == 0
    make_adapter(gguf / "adapters" / "other-model", 1)  # the tiny test model's shapes
    return store, trained, mlx


@pytest.fixture(scope="module")
def server(store, default_ids):
    with ServerProcess(store[0], model=default_ids["llamacpp"], engine="llamacpp") as running:
        yield running


def complete(server: ServerProcess, model: str, prompt: str) -> httpx.Response:
    body = {"model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0}
    body["repeat_penalty"] = 1.0  # mlx-lm's greedy decoding applies none
    return httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)


def text_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["text"]


def divergence_gaps(model_dir: Path, adapter: Path, texts: list[str]) -> list[float]:
    """For each prompt, how far llama.cpp's reply is from mlx-lm's greedy one with the same
    adapter, on the MLX conversion of the same weights: 0 where the tokens agree, else at the
    first token that differs, how many nats mlx-lm's pick beats llama.cpp's in mlx-lm's own
    logits (a near tie is what Q4_K against float32 can tip). mlx-lm decodes the prompts as
    one greedy batch."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    model, tokenizer = load(str(model_dir), adapter_path=str(adapter))
    prompts = [tokenizer.encode(prompt) for prompt in PROMPTS]
    batch = batch_generate(model, tokenizer, prompts, max_tokens=TOKENS, return_token_ids=True)
    gaps = []
    for prompt_ids, reference, text in zip(prompts, batch.token_ids, texts, strict=True):
        ours = tokenizer.encode(text, add_special_tokens=False)
        pairs = zip(ours, reference, strict=False)  # llama.cpp may have stopped sooner
        at = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        if at is None:
            gaps.append(0.0)
            continue
        logits = model(mx.array([prompt_ids + reference[:at]]))[0, -1]
        gaps.append(float(logits[reference[at]] - logits[ours[at]]))
    return gaps


def test_an_adapter_on_llama_cpp_answers_as_mlx_lm_with_that_adapter(server, store, default_ids):
    adapter_id = f"{default_ids['llamacpp']}@tuned"
    ours = [text_of(complete(server, adapter_id, prompt)) for prompt in PROMPTS]
    base = [text_of(complete(server, default_ids["llamacpp"], p)) for p in PROMPTS]
    assert all(adapted != plain for adapted, plain in zip(ours, base, strict=True))
    gaps = divergence_gaps(store[2], store[1], ours)
    assert all(0 <= gap < NEAR_TIE for gap in gaps), (gaps, ours)


def test_base_requests_beside_adapter_requests_stay_the_base_models(server, default_ids):
    """The child holds the adapter unapplied: the base model's answers are as without it."""
    gguf_id = default_ids["llamacpp"]
    before = complete(server, gguf_id, PROMPTS[0]).json()["choices"][0]["text"]
    assert complete(server, f"{gguf_id}@tuned", PROMPTS[0]).status_code == 200
    assert complete(server, gguf_id, PROMPTS[0]).json()["choices"][0]["text"] == before


def test_an_adapter_of_another_model_is_a_400_and_the_base_still_answers(server, default_ids):
    gguf_id = default_ids["llamacpp"]
    refused = complete(server, f"{gguf_id}@other-model", PROMPTS[0])
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "model" and "another model" in error["message"]
    assert complete(server, gguf_id, PROMPTS[0]).status_code == 200


def test_the_adapter_unloads_and_loads_again_without_the_base_reloading(server, default_ids):
    gguf_id, adapter_id = default_ids["llamacpp"], f"{default_ids['llamacpp']}@tuned"
    first = complete(server, adapter_id, PROMPTS[1]).json()["choices"][0]["text"]
    pid = httpx.get(f"{server.base_url}/api/v0/loaded", timeout=30).json()
    unload = {"identifier": adapter_id}
    response = httpx.post(f"{server.base_url}/api/v0/models/unload", json=unload, timeout=30)
    assert response.status_code == 200, response.text
    assert complete(server, adapter_id, PROMPTS[1]).json()["choices"][0]["text"] == first
    loaded = httpx.get(f"{server.base_url}/api/v0/loaded", timeout=30).json()
    base_entry = next(e for e in loaded["data"] if e["identifier"] == gguf_id)
    assert (
        base_entry["loaded_at"]
        == next(e for e in pid["data"] if e["identifier"] == gguf_id)["loaded_at"]
    )


def test_llama_query_and_key_adapters_follow_llama_cpps_row_order(tmp_path):
    """llama.cpp's converter reorders a LLaMA model's query and key rows; an adapter's
    `lora_b` rows must be reordered alike. A tiny LLaMA in float32, adapted on exactly those
    layers, gives mlx-lm's greedy tokens with the same adapter (and others without it)."""
    from mlx_lm.utils import load_adapters

    from mlxserve.engine.llamacpp.lora import gguf_adapter
    from mlxserve.engine.llamacpp.process import LlamaServerProcess
    from tests.gguf_fixtures import TINY_ARCHS, reference_model, write_tiny_gguf
    from tests.test_convert_llamacpp import greedy, llamacpp_tokenize

    arch = TINY_ARCHS["llama"]
    model, config, weights = reference_model(arch, seed=3)
    gguf_path = tmp_path / "llama.gguf"
    write_tiny_gguf(gguf_path, arch, weights, config)
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (64, 32)}  # 4 and 2 heads of 16
    adapter = make_adapter(
        tmp_path / "qk", 4, keys=tuple(shapes), shapes=shapes, layers=2, total_layers=2, spread=0.5
    )
    child = LlamaServerProcess(
        gguf_path,
        context_length=256,
        parallel=1,
        extra_args=("--lora", str(gguf_adapter(adapter, gguf_path)), "--lora-init-without-apply"),
    )
    child.start(timeout=60)
    body = {"n_predict": 12, "temperature": 0, "top_k": 1, "samplers": ["top_k"],
            "cache_prompt": False, "return_tokens": True}  # fmt: skip
    try:
        with httpx.Client(base_url=child.base_url, timeout=120) as client:
            ids = llamacpp_tokenize(client, " hello world and the model code in the", True)
            replies = {
                scale: client.post(
                    "/completion",
                    json={**body, "prompt": ids, "lora": [{"id": 0, "scale": scale}]},
                ).json()["tokens"]
                for scale in (0.0, 1.0)
            }
    finally:
        child.stop()
    assert replies[0.0] == greedy(model, ids, len(replies[0.0]))
    load_adapters(model, str(adapter))
    assert replies[1.0] == greedy(model, ids, len(replies[1.0])) != replies[0.0]
