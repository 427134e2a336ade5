"""A token's log-probability as OpenAI's chat completions and Responses report it: its text,
log-probability and bytes, with the likeliest alternatives."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mlxserve.api.shared.protocol import Answer
from mlxserve.engine.base import TokenLogprob

FLOOR = -9999.0  # an impossible token's log-probability: JSON has no -Infinity


class TopLogprob(Answer):
    token: str
    logprob: float
    bytes: list[int] | None


class ContentLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else FLOOR


def _top(entry: TokenLogprob) -> TopLogprob:
    return TopLogprob(token=entry.text, logprob=finite(entry.logprob), bytes=list(entry.bytes))


def content_logprobs(entries: Iterable[TokenLogprob]) -> list[ContentLogprob]:
    return [
        ContentLogprob(**_top(entry).as_dict(), top_logprobs=[_top(alt) for alt in entry.top])
        for entry in entries
    ]
