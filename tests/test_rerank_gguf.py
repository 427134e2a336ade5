"""GGUF cross-encoder rerankers on the llama.cpp engine: a tiny random BERT sequence classifier
written as llama.cpp's converter writes a reranker (rank pooling, `cls` and `cls.output`) is
found as a `rerank` model, served by a child started with rank pooling, and scores each pair as
the same weights do on MLX when read llama.cpp's way: `[CLS] query [SEP] document [SEP]`, all
in one segment (Hugging Face puts the document in segment 1)."""

from __future__ import annotations

import httpx
import mlx.core as mx
import numpy as np
import pytest
from tokenizers import Tokenizer

from mlxserve.engine.mlx.cross_encoder import MLXCrossEncoder
from mlxserve.models.gguf_import import register_gguf
from tests.bert_gguf import write_bert_gguf
from tests.server import ServerProcess
from tests.test_rerank_cross_encoder import DOCUMENTS, QUERY, random_cross_encoder, scores
from tests.test_rerank_cross_encoder import rerank as rerank_on

RERANKER = "test/tiny-cross-encoder-gguf"
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_cross_encoder(tmp_path_factory.mktemp("hf") / "cross-encoder")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    gguf_path = tmp_path_factory.mktemp("gguf") / "tiny-cross-encoder.gguf"
    write_bert_gguf(checkpoint, gguf_path, reranker=True)
    register_gguf(gguf_path, store, RERANKER)
    with ServerProcess(store, model=RERANKER, engine="llamacpp") as running:
        yield running


def rerank(server, documents: list[str]) -> dict:
    return rerank_on(server, documents, model=RERANKER)


def test_the_gguf_reranker_is_listed_as_one(server):
    entry = httpx.get(f"{server.base_url}/api/v0/models/{RERANKER}").json()
    assert (entry["type"], entry["compatibility_type"]) == ("rerank", "gguf")


def test_pairs_score_as_the_same_weights_read_llama_cpps_way(server, checkpoint):
    model = MLXCrossEncoder._load_model(checkpoint)
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.no_padding()  # all-MiniLM's file pads every input to 128
    query = tokenizer.encode(QUERY, add_special_tokens=False).ids
    batched = scores(rerank(server, DOCUMENTS))
    for index, document in enumerate(DOCUMENTS):
        ids = [CLS, *query, SEP, *tokenizer.encode(document, add_special_tokens=False).ids, SEP]
        row = mx.array([ids])
        logit = model(row, mx.ones_like(row), mx.zeros_like(row)).item()
        assert batched[index] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-3), document
        assert scores(rerank(server, [document]))[0] == pytest.approx(batched[index], abs=1e-3)


def test_a_document_past_the_window_is_cut_and_reported(server):
    answer = rerank(server, ["short", "word " * 200])
    assert answer["meta"]["truncated_documents"] == [1]
    assert set(scores(answer)) == {0, 1}
