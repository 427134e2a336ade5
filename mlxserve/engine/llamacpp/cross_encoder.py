"""GGUF cross-encoder rerankers on the llama.cpp child: a BERT or XLM-RoBERTa classifier GGUF
(rank pooling) whose child starts with `--pooling rank` and answers llama-server's /rerank.

llama.cpp reads each pair its own way, `[CLS] query [SEP] document [SEP]` for BERT, all in one
segment (Hugging Face's BERT puts the document in segment 1, so a BERT reranker scores somewhat
differently than the same weights on MLX; XLM-RoBERTa has one segment anyway). It refuses a pair
past its window, so documents are cut to fit first (and reported); a query past half the window
is cut too. It takes both as text, so a cut one is sent as the text of its first tokens. Its raw
logit becomes P(relevant) by its sigmoid, as sentence-transformers scores a one-label
cross-encoder."""

from __future__ import annotations

import numpy as np

from mlxserve.engine.base import PairScores

PAIR_SPECIALS = 4  # room for a pair's special tokens ([CLS] q [SEP] d [SEP], <s> q </s></s> d </s>)


async def score_pairs_on_child(model, query: str, documents: list[str]) -> PairScores:
    window = model.context_length
    query_tokens = await model.tokenize(query, add_special_tokens=False)
    query_cut = query_tokens[: window // 2]
    if len(query_cut) < len(query_tokens):  # llama.cpp takes the query as text only
        query = await model.detokenize(query_cut)
    room = window - len(query_cut) - PAIR_SPECIALS
    fitted, truncated = [], []
    for index, document in enumerate(documents):
        # Every token covers at least one byte: text this short fits without asking the child.
        if len(document.encode()) <= room:
            fitted.append(document)
            continue
        tokens = await model.tokenize(document, add_special_tokens=False)
        if len(tokens) > room:  # llama.cpp takes documents as text only
            truncated.append(index)
            document = await model.detokenize(tokens[:room])
        fitted.append(document)
    body = {"query": query, "documents": fitted, "top_n": len(documents)}
    answer = await model._request("POST", "/rerank", body)
    logits = np.zeros(len(documents), dtype=np.float64)
    for result in answer["results"]:
        logits[result["index"]] = result["relevance_score"]
    tokens = int(answer.get("usage", {}).get("prompt_tokens", 0))
    return PairScores((1.0 / (1.0 + np.exp(-logits))).astype(np.float32), tokens, truncated)
