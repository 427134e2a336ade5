"""Rerank with a cross-encoder (a BERT classifier reads the query and each document together), or
with a chat model: each document is judged by the model's next-token answer to "does
this document meet the query? yes or no", as the Qwen3-Reranker recipe asks it, and scored by
P(yes) over {yes, no}. The prompt goes through the model's own chat template; the part before
the document (instruction and query) is read once per request, the documents in batches.

Bounds: at most 1,000 documents, each cut to 512 tokens (the cut ones are reported), a query of
at most 4,096 characters; a document's text is cut to 8 characters a token before it is
tokenized, so a huge one costs little."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from mlxserve.engine.base import RelevanceJob
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.deadline import timeout_error
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.prepare import ServerLimits
from mlxserve.pipeline.templates import chat_template_for, render_chat

MAX_DOCUMENTS = 1000
MAX_DOCUMENT_TOKENS = 512
MAX_QUERY_CHARACTERS = 4096
CHARACTERS_PER_TOKEN_CUT = 8  # no token is longer: text past this many is never read
JUDGE = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
DOCUMENT_MARKER = "\x00document\x00"  # where the document goes in the rendered prompt


@dataclass
class Ranked:
    loaded: LoadedModel
    scores: np.ndarray  # P(yes) of each document, in the documents' order
    truncated: list[int]  # the documents cut to MAX_DOCUMENT_TOKENS
    prompt_tokens: int  # tokens the model read: the shared start once, then each document's


def check_request(query: str, documents: list) -> None:
    if not query:
        raise RequestError(400, "query must not be empty", "query", "empty_query")
    if len(query) > MAX_QUERY_CHARACTERS:
        message = f"query: at most {MAX_QUERY_CHARACTERS} characters, got {len(query)}"
        raise RequestError(400, message, "query", "query_too_long")
    if not documents:
        raise RequestError(400, "documents must not be empty", "documents", "empty_documents")
    if len(documents) > MAX_DOCUMENTS:
        message = f"documents: at most {MAX_DOCUMENTS} per request, got {len(documents)}"
        raise RequestError(400, message, "documents", "too_many_documents")


async def rerank(
    registry: ModelRegistry, model: str, query: str, documents: list[str], limits: ServerLimits
) -> Ranked:
    """Each document's relevance to `query` on the chat model `model` routes to."""
    started = asyncio.get_running_loop().time()
    check_request(query, documents)
    loaded = await registry.resolve(model)
    if loaded.record.type == "rerank":
        score = _scored_by_cross_encoder
    elif loaded.record.type == "llm" and hasattr(loaded.engine, "score_relevance"):
        score = _scored
    else:
        message = (
            f"model '{loaded.identifier}' cannot rerank: rerank needs a reranker or a chat model "
            f"(this one is a {loaded.record.type} model on {loaded.engine.engine_name})"
        )
        raise RequestError(400, message, "model", "rerank_not_supported")
    release = loaded.admit()
    timeout = limits.request_timeout
    try:
        async with asyncio.timeout_at(started + timeout if timeout else None):
            return await score(loaded, query, documents)
    except TimeoutError:
        raise timeout_error(timeout) from None
    finally:
        release()


async def _scored(loaded: LoadedModel, query: str, documents: list[str]) -> Ranked:
    engine = loaded.engine
    head, tail = await asyncio.to_thread(_prompt_around_document, loaded, query)
    shared = await engine.tokenize(head, add_special_tokens=False)
    tail_tokens = await engine.tokenize(tail, add_special_tokens=False)
    continuations, truncated = [], []
    for index, text in enumerate(documents):
        tokens = await engine.tokenize(
            text[: MAX_DOCUMENT_TOKENS * CHARACTERS_PER_TOKEN_CUT], add_special_tokens=False
        )
        if len(tokens) > MAX_DOCUMENT_TOKENS:
            tokens = tokens[:MAX_DOCUMENT_TOKENS]
            truncated.append(index)
        if not tokens + tail_tokens:  # a template with no close after an empty document
            message = f"documents[{index}] must not be empty"
            raise RequestError(400, message, f"documents[{index}]", "empty_document")
        continuations.append(tokens + tail_tokens)
    job = RelevanceJob(shared, continuations, *await _answer_tokens(loaded))
    scores = await engine.score_relevance(job)
    read = len(shared) + sum(len(tokens) for tokens in continuations)
    return Ranked(loaded, scores, truncated, read)


async def _scored_by_cross_encoder(loaded: LoadedModel, query: str, documents: list[str]):
    """A cross-encoder reads each (query, document) pair in its own window, cut to fit."""
    cut = [text[: MAX_DOCUMENT_TOKENS * CHARACTERS_PER_TOKEN_CUT] for text in documents]
    pairs = await loaded.engine.score_pairs(query, cut)
    return Ranked(loaded, pairs.scores, pairs.truncated, pairs.tokens)


def _prompt_around_document(loaded: LoadedModel, query: str) -> tuple[str, str]:
    """The judging prompt in the model's chat template, split where the document goes."""
    engine = loaded.engine
    template = chat_template_for(engine.chat_template, loaded.record.architecture)
    question = f"<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {DOCUMENT_MARKER}"
    messages = [{"role": "system", "content": JUDGE}, {"role": "user", "content": question}]
    rendered = render_chat(
        template, messages, bos_token=engine.bos_token, eos_token=engine.eos_token
    )
    head, _, tail = rendered.rpartition(DOCUMENT_MARKER)
    return head, tail


async def _answer_tokens(loaded: LoadedModel) -> tuple[int, int]:
    """The first token of "yes" and of "no", as the answer would begin."""
    yes = await loaded.engine.tokenize("yes", add_special_tokens=False)
    no = await loaded.engine.tokenize("no", add_special_tokens=False)
    return yes[0], no[0]
