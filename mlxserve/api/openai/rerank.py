"""/v1/rerank (also /rerank and /v2/rerank) in the shape Jina, Cohere and llama-server share:
a query and documents in, results sorted by relevance out. The pipeline scores the documents
(pipeline/rerank.py); this module parses and renders."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator
from quart import Blueprint

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.openai.objects import EmbeddingUsage, OpenAIObject
from mlxserve.api.shared.protocol import OpenAIModel, new_id
from mlxserve.api.state import server_state
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.rerank import MAX_DOCUMENT_TOKENS, Ranked, check_request, rerank

blueprint = Blueprint("rerank", __name__)


class DocumentObject(BaseModel):
    model_config = ConfigDict(extra="allow")  # Cohere's v1 documents carry other fields too
    text: str


class RerankRequest(OpenAIModel):
    model: str
    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = None  # None: every document
    return_documents: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data):
        """Refused with a 400 naming the field before any document is validated: a huge list
        costs little, and a bad top_n is the client's malformed request."""
        if not isinstance(data, dict):
            return data
        query, documents = data.get("query"), data.get("documents")
        if isinstance(query, str) and isinstance(documents, list):
            check_request(query, documents)
        top_n = data.get("top_n")
        if top_n is not None and (type(top_n) is not int or top_n < 1):
            message = f"top_n must be a positive integer, got {top_n!r}"
            raise RequestError(400, message, "top_n", "invalid_value")
        return data

    def texts(self) -> list[str]:
        return [item if isinstance(item, str) else item.text for item in self.documents]


class RerankDocument(OpenAIObject):
    text: str


class RerankResult(OpenAIObject):
    index: int  # the document's place in the request
    relevance_score: float  # in [0, 1]: P(yes) of the model's judgement
    document: RerankDocument | None = None  # with return_documents only


class RerankMeta(OpenAIObject):
    truncated_documents: list[int]  # indexes of documents cut to max_document_tokens
    max_document_tokens: int


class RerankAnswer(OpenAIObject):
    id: str
    model: str
    results: list[RerankResult]
    usage: EmbeddingUsage
    meta: RerankMeta


@blueprint.post("/v1/rerank")
@blueprint.post("/v2/rerank")
@blueprint.post("/rerank")
@answers(RerankAnswer)
@with_body(RerankRequest)
async def rerank_documents(body: RerankRequest):
    """The documents ordered by relevance to the query, most relevant first."""
    state = server_state()
    texts = body.texts()
    ranked = await rerank(state.registry, body.model, body.query, texts, state.limits)
    return _answer(ranked, body, texts).as_dict()


def _answer(ranked: Ranked, body: RerankRequest, texts: list[str]) -> RerankAnswer:
    # A stable sort: equal scores keep the documents' order.
    order = sorted(range(len(texts)), key=lambda i: -float(ranked.scores[i]))
    results = [_result(index, float(ranked.scores[index]), body, texts) for index in order]
    tokens = ranked.prompt_tokens
    return RerankAnswer(
        id=new_id("rerank"),
        model=ranked.loaded.identifier,
        results=results[: body.top_n],
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        meta=RerankMeta(
            truncated_documents=ranked.truncated, max_document_tokens=MAX_DOCUMENT_TOKENS
        ),
    )


def _result(index: int, score: float, body: RerankRequest, texts: list[str]) -> RerankResult:
    if body.return_documents:
        document = RerankDocument(text=texts[index])
        return RerankResult(index=index, relevance_score=score, document=document)
    return RerankResult(index=index, relevance_score=score)
