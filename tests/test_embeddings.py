"""/v1/embeddings on all-MiniLM-L6-v2 imported into the store and run on MLX, checked against
sentence-transformers' own vectors (tests/data, made by scripts/make_embedding_reference.py);
embeddings wait in the model's queue and obey --request-timeout, as generation does."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from scripts.load import worst_stall_bound
from tests.conftest import EMBEDDING_ID
from tests.metrics import model_metric, read_metrics
from tests.server import ServerProcess

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
STALL_LIMIT = 0.25  # seconds; tokenizing or answering the requests below on the loop takes more
TIME_LIMIT = 0.5  # --request-timeout of the strict server, in seconds
# About 120k tokens: seconds of work for MiniLM, far past TIME_LIMIT
LONG_BATCH = [
    f"sentence {i}: " + "a fairly ordinary clause about nothing much, " * 5 for i in range(2048)
]


@pytest.fixture
def mlx_client(server, client, embedding_id):
    if server.engine != "mlx":
        pytest.skip("the MLX-format embedding model runs on the MLX engine")
    return client


def load_tokenizer(models_dir) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(models_dir / EMBEDDING_ID / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads and truncates to 128; the server reads 256 real tokens
    tokenizer.no_truncation()
    return tokenizer


def embed(client, texts, **kwargs) -> np.ndarray:
    result = client.embeddings.create(model=EMBEDDING_ID, input=texts, **kwargs)
    return np.array([item.embedding for item in result.data])


def test_vectors_match_sentence_transformers(mlx_client):
    texts = [item["text"] for item in REFERENCE["items"]]
    ours = embed(mlx_client, texts)
    reference = np.array([item["vector"] for item in REFERENCE["items"]])
    similarity = (ours * reference).sum(axis=1)
    assert len(texts) >= 20 and similarity.min() >= 0.999, similarity.min()
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_list_shape_usage_and_order(mlx_client, models_dir):
    texts = [f"sentence {i} about topic {i % 7}" for i in range(64)]
    result = mlx_client.embeddings.create(model=EMBEDDING_ID, input=texts)
    assert result.object == "list" and result.model == EMBEDDING_ID
    assert [item.index for item in result.data] == list(range(64))
    assert all(len(item.embedding) == 384 for item in result.data)
    tokenizer = load_tokenizer(models_dir)
    expected = sum(len(tokenizer.encode(t).ids) for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected
    batched = np.array([item.embedding for item in result.data])
    assert np.allclose(batched[[5, 40]], embed(mlx_client, [texts[5], texts[40]]), atol=1e-5)


def test_base64_and_token_inputs_agree_with_floats(mlx_client, server, models_dir):
    text = "Paris is the capital of France."
    floats = embed(mlx_client, text)[0]
    body = {"model": EMBEDDING_ID, "input": text, "encoding_format": "base64"}
    raw = httpx.post(f"{server.base_url}/v1/embeddings", json=body).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, floats.astype(np.float32))
    tokenizer = load_tokenizer(models_dir)
    ids = tokenizer.encode(text).ids
    assert np.allclose(embed(mlx_client, [ids])[0], floats, atol=1e-6)
    native = httpx.post(
        f"{server.base_url}/api/v0/embeddings", json={**body, "encoding_format": "float"}
    )
    assert np.allclose(native.json()["data"][0]["embedding"], floats, atol=1e-6)


def test_listed_as_an_embedding_model(mlx_client, server):
    entry = httpx.get(f"{server.base_url}/api/v0/models/{EMBEDDING_ID}").json()
    assert entry["type"] == "embeddings" and entry["arch"] == "bert"
    assert entry["quantization"] == "f32" and entry["max_context_length"] == 256


def test_wrong_model_kind_and_empty_input_are_400(mlx_client, model_id):
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        mlx_client.embeddings.create(model=model_id, input="hi")
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        mlx_client.chat.completions.create(
            model=EMBEDDING_ID, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError):
        mlx_client.embeddings.create(model=EMBEDDING_ID, input=[])
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        mlx_client.embeddings.create(model=EMBEDDING_ID, input=[[101, 102], []])
    with pytest.raises(openai.UnprocessableEntityError, match="token ids") as error:
        mlx_client.embeddings.create(model=EMBEDDING_ID, input=[[101, 999999, 102]])
    assert error.value.body["param"] == "input"


def test_llamacpp_engine_refuses_the_mlx_embedding_model(server, client, embedding_id):
    if server.engine != "llamacpp":
        pytest.skip("checks the llama.cpp engine's answer")
    with pytest.raises(openai.BadRequestError, match="format"):
        client.embeddings.create(model=embedding_id, input="hi")


def test_inputs_past_the_window_are_truncated(mlx_client, models_dir):
    long_text = REFERENCE["items"][-1]["text"]
    ids = load_tokenizer(models_dir).encode(long_text).ids
    assert len(ids) > REFERENCE["max_seq_length"] == 256
    text_result = mlx_client.embeddings.create(model=EMBEDDING_ID, input=long_text)
    assert text_result.usage.prompt_tokens == 256
    ids_result = mlx_client.embeddings.create(model=EMBEDDING_ID, input=[ids * 2, ids[:256]])
    assert ids_result.usage.prompt_tokens == 2 * 256
    vectors = np.array([item.embedding for item in ids_result.data])
    assert np.allclose(vectors[0], vectors[1], atol=1e-6)
    # Text keeps its closing [SEP] after the first 255 tokens, as sentence-transformers does.
    kept = embed(mlx_client, [ids[:255] + ids[-1:]])[0]
    assert np.allclose(kept, text_result.data[0].embedding, atol=1e-6)
    assert not np.allclose(vectors[0], kept, atol=1e-3)


def test_a_huge_list_of_inputs_is_refused_at_once_with_memory_flat(mlx_client, server):
    mlx_client.embeddings.create(model=EMBEDDING_ID, input="loaded before measuring")
    resident = 'mlxserve_resident_bytes{process="server"}'
    before = read_metrics(server.base_url)[resident]
    started = time.monotonic()
    body = {"model": EMBEDDING_ID, "input": ["a"] * 2_000_000}
    reply = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=30)
    seconds = time.monotonic() - started
    grown = read_metrics(server.base_url)[resident] - before
    error = reply.json()["error"]
    assert reply.status_code == 400 and (error["param"], error["code"]) == (
        "input",
        "too_many_inputs",
    )
    assert "2048" in error["message"] and seconds < 5
    assert grown < 64 * 2**20, grown


@pytest.mark.parametrize(
    ("value", "param", "code"),
    [
        (["short", "x" * 32_769], "input[1]", "input_too_long"),
        ([101] * 8193, "input[0]", "input_too_long"),
        ([[101, 102], [101] * 8193], "input[1]", "input_too_long"),
        (["y" * 600] * 2048, "input", "request_too_large"),
        ([[101] * 147] * 2048, "input", "request_too_large"),
        ([[101]] * 2049, "input", "too_many_inputs"),
    ],
)
def test_inputs_past_the_bounds_are_refused_naming_the_field(mlx_client, value, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        mlx_client.embeddings.create(model=EMBEDDING_ID, input=value)
    assert (error.value.body["param"], error.value.body["code"]) == (param, code)


def test_inputs_at_the_bounds_are_embedded(mlx_client):
    words = ("word " * 6554)[:32_768]
    text = mlx_client.embeddings.create(model=EMBEDDING_ID, input=[words])
    tokens = mlx_client.embeddings.create(model=EMBEDDING_ID, input=[[101] * 8192])
    assert text.usage.prompt_tokens == tokens.usage.prompt_tokens == 256  # cut to the window
    batch = mlx_client.embeddings.create(model=EMBEDDING_ID, input=[[101, 102]] * 2048)
    assert len(batch.data) == 2048 and batch.usage.prompt_tokens == 2048 * 2


def test_the_event_loop_runs_on_while_inputs_are_tokenized_and_answered(mlx_client, server):
    mlx_client.embeddings.create(model=EMBEDDING_ID, input="loaded before measuring")
    before = read_metrics(server.base_url)
    long_texts = ["the quick brown fox jumps over the lazy dog " * 744] * 36  # 1.18M characters
    long_reply = mlx_client.embeddings.create(model=EMBEDDING_ID, input=long_texts)
    body = {"model": EMBEDDING_ID, "input": ["word"] * 2048, "encoding_format": "float"}
    many = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=120).json()
    after = read_metrics(server.base_url)
    assert long_reply.usage.prompt_tokens == 36 * 256
    assert len(many["data"]) == 2048 and len(many["data"][-1]["embedding"]) == 384
    assert worst_stall_bound(before, after) <= STALL_LIMIT, after


@pytest.fixture(scope="module")
def strict_server(models_dir, embedding_id):
    """The embedding model alone, with no queue beyond the request it runs and a short limit."""
    args = ["--max-queued", "0", "--request-timeout", str(TIME_LIMIT)]
    with ServerProcess(models_dir, model=embedding_id, engine="mlx", extra_args=args) as running:
        yield running


async def post_at_once(url: str, body: dict, count: int) -> list[tuple[httpx.Response, float]]:
    async def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        reply = await http.post(url, json=body)
        return reply, time.monotonic() - started

    async with httpx.AsyncClient(timeout=120) as http:
        return await asyncio.gather(*(timed() for _ in range(count)))


def test_embeddings_are_admitted_and_timed_as_generation_is(strict_server):
    url = f"{strict_server.base_url}/v1/embeddings"
    body = {"model": EMBEDDING_ID, "input": LONG_BATCH}
    replies = asyncio.run(post_at_once(url, body, 4))
    by_status = sorted(replies, key=lambda reply: reply[0].status_code)
    assert [reply.status_code for reply, _ in by_status] == [429, 429, 429, 504], by_status
    for refused, _ in by_status[:3]:
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.headers["Retry-After"] == "2"
    timed_out, seconds = by_status[3]
    assert timed_out.json()["error"]["code"] == "request_timeout"
    assert TIME_LIMIT <= seconds < TIME_LIMIT + 5  # stopped at its limit, not run to the end
    metric = "mlxserve_requests_rejected_total"
    assert model_metric(strict_server.base_url, metric, EMBEDDING_ID) == 3
    assert model_metric(strict_server.base_url, "mlxserve_requests_active", EMBEDDING_ID) == 0
