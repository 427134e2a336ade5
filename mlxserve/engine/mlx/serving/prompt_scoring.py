"""The log-probability a model gives each token of a prompt after the tokens before it (what
OpenAI's `echo` with `logprobs` reports, and what evaluation harnesses score answers by)."""

from __future__ import annotations

import mlx.core as mx

from mlxserve.engine.base import TokenLogprob
from mlxserve.engine.mlx.architectures.text_model import TextModel
from mlxserve.engine.mlx.serving.detokenizer import token_logprob

# Positions per forward pass: a pass's logits (positions x vocabulary floats) stay small.
SCORING_CHUNK = 64


def score_prompt(model: TextModel, tokenizer, tokens: list[int], top: int) -> list[TokenLogprob]:
    """One entry per prompt token: the first, which nothing predicts, without a log-probability;
    each later one with its own and the `top` likeliest tokens' at its position. Read with a
    cache of its own, so no running stream's state is touched."""
    cache = model.make_cache()
    model.route([])  # the base model's own figures, whatever adapters the batch last used
    entries = [token_logprob(tokenizer, tokens[0], None)]
    for start in range(0, len(tokens) - 1, SCORING_CHUNK):
        end = min(start + SCORING_CHUNK, len(tokens) - 1)
        logits = model.model(mx.array([tokens[start:end]]), cache=cache)[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        following = mx.array(tokens[start + 1 : end + 1])
        chosen = mx.take_along_axis(logprobs, following[:, None], axis=-1)[:, 0]
        if top:
            ranked = mx.argpartition(-logprobs, top - 1, axis=-1)[:, :top]
            ranked_values = mx.take_along_axis(logprobs, ranked, axis=-1)
        else:
            ranked = ranked_values = mx.zeros((end - start, 0))
        mx.eval(chosen, ranked, ranked_values)
        for row, token in enumerate(tokens[start + 1 : end + 1]):
            pairs = zip(ranked[row].tolist(), ranked_values[row].tolist(), strict=True)
            alternatives = sorted(pairs, key=lambda pair: -pair[1])
            entries.append(token_logprob(tokenizer, token, chosen[row].item(), alternatives))
    return entries
