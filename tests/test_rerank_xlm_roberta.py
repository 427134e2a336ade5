"""XLM-RoBERTa cross-encoders (the layout of BAAI's bge-reranker models): a tiny random
XLMRobertaForSequenceClassification with a tokenizer of XLM-R's shape converts into the store
as a reranker, and scores each (query, document) pair as a plain numpy forward pass of the same
weights does: positions after the padding id, one segment, `<s> q </s></s> d </s>`, and the
classification head's dense, tanh and projection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import mlx.core as mx
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from mlxserve.models.convert import convert_model
from tests.server import ServerProcess

RERANKER = "test/tiny-xlm-roberta-reranker"
QUERY = "what is the capital of france"
DOCUMENTS = ["paris is the capital of france", "bananas are yellow", "the ball is red"]
WORDS = sorted({word for text in [QUERY, *DOCUMENTS] for word in text.split()})
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0 to 3
HIDDEN, INNER, HEADS, LAYERS, WINDOW = 32, 64, 2, 2, 16
CONFIG = {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
          "vocab_size": len(SPECIALS) + len(WORDS), "hidden_size": HIDDEN,
          "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INNER,
          "max_position_embeddings": WINDOW + 2, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
          "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
          "id2label": {"0": "LABEL_0"}}  # fmt: skip


def xlm_r_tokenizer() -> Tokenizer:
    vocab = {token: i for i, token in enumerate(SPECIALS + [f"▁{w}" for w in WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B:1 </s>:1",  # segment 1 for the document, as some tokenizers do
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tokenizer


def random_weights(rng) -> dict[str, np.ndarray]:
    shapes = {"roberta.embeddings.word_embeddings.weight": (CONFIG["vocab_size"], HIDDEN),
              "roberta.embeddings.position_embeddings.weight": (WINDOW + 2, HIDDEN),
              "roberta.embeddings.token_type_embeddings.weight": (1, HIDDEN),
              "classifier.dense.weight": (HIDDEN, HIDDEN), "classifier.dense.bias": (HIDDEN,),
              "classifier.out_proj.weight": (1, HIDDEN),
              "classifier.out_proj.bias": (1,)}  # fmt: skip
    for layer in range(LAYERS):
        prefix = f"roberta.encoder.layer.{layer}."
        for name, (out_dims, in_dims) in {
            "attention.self.query": (HIDDEN, HIDDEN),
            "attention.self.key": (HIDDEN, HIDDEN),
            "attention.self.value": (HIDDEN, HIDDEN),
            "attention.output.dense": (HIDDEN, HIDDEN),
            "intermediate.dense": (INNER, HIDDEN),
            "output.dense": (HIDDEN, INNER),
        }.items():
            shapes[f"{prefix}{name}.weight"], shapes[f"{prefix}{name}.bias"] = (
                (out_dims, in_dims),
                (out_dims,),
            )
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{prefix}{norm}.weight"] = shapes[f"{prefix}{norm}.bias"] = (HIDDEN,)
    shapes["roberta.embeddings.LayerNorm.weight"] = (HIDDEN,)
    shapes["roberta.embeddings.LayerNorm.bias"] = (HIDDEN,)
    return {name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}


def reference_logit(w: dict[str, np.ndarray], ids: list[int]) -> float:
    """Hugging Face's XLMRobertaForSequenceClassification, written out for one unpadded row."""

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    e = "roberta.embeddings."
    positions = np.arange(len(ids)) + CONFIG["pad_token_id"] + 1
    x = w[f"{e}word_embeddings.weight"][ids] + w[f"{e}position_embeddings.weight"][positions]
    x = norm(x + w[f"{e}token_type_embeddings.weight"][0], f"{e}LayerNorm")
    size = HIDDEN // HEADS
    for layer in range(LAYERS):
        p = f"roberta.encoder.layer.{layer}."
        q, k, v = (linear(x, f"{p}attention.self.{n}") for n in ("query", "key", "value"))
        heads = []
        for h in range(HEADS):
            part = slice(h * size, (h + 1) * size)
            scores = q[:, part] @ k[:, part].T / math.sqrt(size)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            heads.append(weights / weights.sum(-1, keepdims=True) @ v[:, part])
        x = norm(linear(np.concatenate(heads, -1), f"{p}attention.output.dense") + x,
                 f"{p}attention.output.LayerNorm")  # fmt: skip
        inner = linear(x, f"{p}intermediate.dense")
        inner = 0.5 * inner * (1 + np.vectorize(math.erf)(inner / math.sqrt(2)))
        x = norm(linear(inner, f"{p}output.dense") + x, f"{p}output.LayerNorm")
    first = np.tanh(linear(x[0], "classifier.dense"))
    return float(linear(first, "classifier.out_proj")[0])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("hf") / "xlm-r-reranker"
    folder.mkdir()
    weights = random_weights(np.random.default_rng(3))
    mx.save_safetensors(
        str(folder / "model.safetensors"), {k: mx.array(v) for k, v in weights.items()}
    )
    (folder / "config.json").write_text(json.dumps(CONFIG))
    xlm_r_tokenizer().save(str(folder / "tokenizer.json"))
    return folder, weights


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    convert_model(checkpoint[0], store, RERANKER, progress=False)
    with ServerProcess(store, model=RERANKER, engine="mlx") as running:
        yield running


def rerank(server, documents: list[str]) -> dict[int, float]:
    body = {"model": RERANKER, "query": QUERY, "documents": documents}
    reply = httpx.post(f"{server.base_url}/v1/rerank", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return {r["index"]: r["relevance_score"] for r in reply.json()["results"]}


def test_scores_are_the_classifiers_as_hugging_face_computes_it(server, checkpoint):
    folder, weights = checkpoint
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    batched = rerank(server, DOCUMENTS)
    for index, document in enumerate(DOCUMENTS):
        ids = tokenizer.encode(QUERY, document).ids
        assert ids[:1] == [0] and ids.count(2) == 3  # <s> q </s></s> d </s>
        expected = 1 / (1 + math.exp(-reference_logit(weights, ids)))
        assert batched[index] == pytest.approx(expected, abs=1e-4), document
        assert rerank(server, [document])[0] == pytest.approx(batched[index], abs=1e-5)


def test_the_reranker_is_listed_with_its_architecture_and_window(server):
    entry = httpx.get(f"{server.base_url}/api/v0/models/{RERANKER}").json()
    assert (entry["type"], entry["arch"], entry["max_context_length"]) == (
        "rerank",
        "xlm-roberta",
        WINDOW,
    )
