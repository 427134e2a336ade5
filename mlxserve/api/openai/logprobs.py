"""Token log-probabilities in OpenAI's two shapes: chat's list of token objects (`content`, each
with its bytes and `top_logprobs`) and the legacy completions' parallel lists (`tokens`,
`token_logprobs`, `top_logprobs` as {token: logprob}, `text_offset`)."""

from __future__ import annotations

import math

from mlxserve.api.openai.objects import ChatLogprobs, ContentLogprob, TextLogprobs, TopLogprob
from mlxserve.engine.base import TokenLogprob

FLOOR = -9999.0  # an impossible token's log-probability: JSON has no -Infinity


def _value(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else FLOOR


def _top(entry: TokenLogprob) -> TopLogprob:
    return TopLogprob(token=entry.text, logprob=_value(entry.logprob), bytes=list(entry.bytes))


def chat_logprobs(entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> ChatLogprobs:
    content = [
        ContentLogprob(**_top(entry).as_dict(), top_logprobs=[_top(alt) for alt in entry.top])
        for entry in entries
    ]
    return ChatLogprobs(content=content, refusal=None)


def text_logprobs(entries, offset: int = 0) -> TextLogprobs:
    """`offset`: where the first token's text starts in the whole reply."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return TextLogprobs(
        tokens=[entry.text for entry in entries],
        token_logprobs=[_value(entry.logprob) for entry in entries],
        top_logprobs=[{alt.text: _value(alt.logprob) for alt in entry.top} for entry in entries],
        text_offset=offsets,
    )
