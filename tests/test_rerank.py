"""/v1/rerank on the real Gemma 3 270M, scored from its yes/no answer on the MLX engine: the
relevant document ranks first, the order is stable, a document's score is the same alone and
in a batch, top_n and return_documents shape the answer, bad input is a 400 naming the field;
the llama.cpp engine ranks from its child's probabilities as MLX does."""

from __future__ import annotations

import httpx
import pytest

from mlxserve.pipeline.rerank import MAX_DOCUMENT_TOKENS, MAX_DOCUMENTS

QUERY = "What is the capital of France?"
PARIS = "Paris is the capital and largest city of France."
DOCUMENTS = [
    "Bananas are yellow fruits rich in potassium.",
    PARIS,
    "Football is a popular sport played with a ball.",
]


# The suite's MLX server on the real Gemma; the llama.cpp engine is compared in the last test.
pytestmark = pytest.mark.parametrize("server", ["mlx"], indirect=True)


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def ranked(api, default_ids) -> dict:
    """One answer over the three documents, shared by the tests that read it."""
    return rerank(api, default_ids["mlx"], DOCUMENTS, return_documents=True)


def rerank(api: httpx.Client, model: str, documents: list, path="/v1/rerank", **fields) -> dict:
    response = api.post(
        path, json={"model": model, "query": QUERY, "documents": documents, **fields}
    )
    assert response.status_code == 200, response.text
    return response.json()


def scores_by_index(answer: dict) -> dict[int, float]:
    return {result["index"]: result["relevance_score"] for result in answer["results"]}


def test_the_relevant_document_ranks_first(ranked):
    results = ranked["results"]
    assert [r["index"] for r in results][0] == DOCUMENTS.index(PARIS)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert results[0]["document"] == {"text": PARIS}
    assert ranked["usage"]["prompt_tokens"] == ranked["usage"]["total_tokens"] > 0
    assert ranked["meta"]["truncated_documents"] == []


def test_order_and_scores_are_stable(api, default_ids, ranked):
    again = rerank(api, default_ids["mlx"], DOCUMENTS, path="/rerank")
    assert [r["index"] for r in again["results"]] == [r["index"] for r in ranked["results"]]
    for index, score in scores_by_index(again).items():
        assert score == pytest.approx(scores_by_index(ranked)[index], abs=1e-5)


def test_a_document_scores_the_same_alone_and_in_a_batch(api, default_ids, ranked):
    batched = scores_by_index(ranked)
    for index in (DOCUMENTS.index(PARIS), 0):
        alone = rerank(api, default_ids["mlx"], [DOCUMENTS[index]], path="/v2/rerank")
        assert alone["results"][0]["relevance_score"] == pytest.approx(batched[index], abs=1e-3)


def test_top_n_and_document_objects(api, default_ids):
    objects = [{"text": text, "id": f"doc-{i}"} for i, text in enumerate(DOCUMENTS)]
    answer = rerank(api, default_ids["mlx"], objects, top_n=1)
    assert [r["index"] for r in answer["results"]] == [DOCUMENTS.index(PARIS)]
    assert "document" not in answer["results"][0]  # return_documents is off by default
    assert answer["model"] == default_ids["mlx"] and answer["id"].startswith("rerank-")


def test_a_long_document_is_cut_and_reported(api, default_ids):
    long = "Paris " * (MAX_DOCUMENT_TOKENS + 100)
    answer = rerank(api, default_ids["mlx"], [PARIS, long])
    assert answer["meta"]["truncated_documents"] == [1]
    assert len(answer["results"]) == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": DOCUMENTS}, "query"),
        ({"query": "", "documents": DOCUMENTS}, "query"),
        ({"query": QUERY}, "documents"),
        ({"query": QUERY, "documents": []}, "documents"),
        ({"query": QUERY, "documents": ["x"] * (MAX_DOCUMENTS + 1)}, "documents"),
        ({"query": QUERY, "documents": DOCUMENTS, "top_n": 0}, "top_n"),
        ({"query": QUERY, "documents": DOCUMENTS, "top_n": "three"}, "top_n"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, default_ids, body, param):
    response = api.post("/v1/rerank", json={"model": default_ids["mlx"], **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_an_embedding_model_cannot_rerank(api, embedding_id):
    response = api.post(
        "/v1/rerank", json={"model": embedding_id, "query": QUERY, "documents": ["a"]}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "rerank_not_supported"


def test_the_llamacpp_engine_ranks_as_mlx_does(gemma_llamacpp, default_ids, ranked):
    """The child's yes/no probabilities: the same order as MLX's and scores within 0.1 (it runs
    the GGUF's 4-bit weights with 8-bit activations, MLX their float32 copy); a document's
    score alone and beside others agrees within 1e-2, since llama.cpp's sums differ a little
    with what its slots read together."""
    model = default_ids["llamacpp"]
    with httpx.Client(base_url=gemma_llamacpp.base_url, timeout=120) as child_api:
        batched = rerank(child_api, model, DOCUMENTS)
        alone = rerank(child_api, model, [PARIS])
    assert [r["index"] for r in batched["results"]] == [r["index"] for r in ranked["results"]]
    paris = scores_by_index(batched)[DOCUMENTS.index(PARIS)]
    assert alone["results"][0]["relevance_score"] == pytest.approx(paris, abs=1e-2)
    for index, score in scores_by_index(batched).items():
        assert score == pytest.approx(scores_by_index(ranked)[index], abs=0.1)
