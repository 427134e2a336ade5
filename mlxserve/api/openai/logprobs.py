"""Token log-probabilities in OpenAI's two shapes: chat's list of token objects (`content`, each
with its bytes and `top_logprobs`) and the legacy completions' parallel lists (`tokens`,
`token_logprobs`, `top_logprobs` as {token: logprob}, `text_offset`)."""

from __future__ import annotations

from mlxserve.api.openai.objects import ChatLogprobs, TextLogprobs
from mlxserve.api.shared.logprobs import content_logprobs, finite
from mlxserve.engine.base import TokenLogprob


def chat_logprobs(entries) -> ChatLogprobs:
    return ChatLogprobs(content=content_logprobs(entries), refusal=None)


def text_logprobs(entries, offset: int = 0) -> TextLogprobs:
    """`offset`: where the first token's text starts in the whole reply. An echoed prompt's
    first token, which nothing predicts, has null for its log-probability and alternatives."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return TextLogprobs(
        tokens=[entry.text for entry in entries],
        token_logprobs=[None if e.logprob is None else finite(e.logprob) for e in entries],
        top_logprobs=[_alternatives(entry) for entry in entries],
        text_offset=offsets,
    )


def _alternatives(entry: TokenLogprob) -> dict[str, float] | None:
    if entry.logprob is None:
        return None
    return {alt.text: finite(alt.logprob) for alt in entry.top}
