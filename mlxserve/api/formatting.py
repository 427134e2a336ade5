"""OpenAI's chat completion and text completion objects, streamed and whole, rendered from the
pipeline's output events."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from json.encoder import encode_basestring

from quart import Response, current_app, jsonify

from mlxserve.api.sse import sse_response
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.events import (
    Completion,
    Finished,
    OutputEvent,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
)
from mlxserve.pipeline.generate import complete, generate
from mlxserve.pipeline.prepare import prepare
from mlxserve.pipeline.request import GenerateRequest

Extras = Callable[[GenerationStats], dict]  # fields added once generation has ended (/api/v0)
ModelExtras = Callable[..., dict]  # the same, given the loaded model first

TEXT_MARKER = "\u0000text\u0000"  # cannot occur in the envelope's own fields


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(stats: GenerationStats) -> dict:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
    }


class ResponseShape:
    """The envelope shared by one response's objects: id, object type, created time and model."""

    def __init__(self, kind: str, response_id: str, model: str):
        self.kind = kind  # "chat" or "text"
        self.id = response_id
        self.model = model
        self.created = int(time.time())
        self._text_chunk_parts: tuple[str, str] | None = None

    def _envelope(self, object_type: str, choices: list[dict]) -> dict:
        return {
            "id": self.id,
            "object": object_type,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.model,
            "choices": choices,
        }

    def full(
        self,
        text: str,
        stats: GenerationStats,
        finish_reason: str,
        tool_calls: list[dict] | None = None,
        reasoning: str = "",
    ) -> dict:
        if self.kind == "chat":
            message = {"role": "assistant", "content": text or None if tool_calls else text}
            if reasoning:  # the field LM Studio, vLLM and DeepSeek's API use
                message["reasoning_content"] = reasoning
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "logprobs": None}
            object_type = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            object_type = "text_completion"
        choice["finish_reason"] = finish_reason
        return {**self._envelope(object_type, [choice]), "usage": usage(stats)}

    def chunk(
        self,
        text: str | None,
        finish_reason: str | None = None,
        role: bool = False,
        tool_calls: list[dict] | None = None,
        reasoning: str = "",
    ) -> dict:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            if reasoning:
                delta["reasoning_content"] = reasoning
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice = {"index": 0, "delta": delta, "logprobs": None}
            object_type = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
            object_type = "text_completion"
        choice["finish_reason"] = finish_reason
        return self._envelope(object_type, [choice])

    def text_chunk_json(self, text: str) -> str:
        """A text chunk already serialized: the envelope is encoded once per response, so each
        streamed token costs one string escape rather than a whole JSON encode."""
        if self._text_chunk_parts is None:
            marker = json.dumps(TEXT_MARKER)
            encoded = json.dumps(self.chunk(TEXT_MARKER), ensure_ascii=False)
            self._text_chunk_parts = tuple(encoded.split(marker))
        prefix, suffix = self._text_chunk_parts
        # What json.dumps(text, ensure_ascii=False) gives, without a new encoder per call.
        return prefix + encode_basestring(text) + suffix

    def usage_chunk(self, stats: GenerationStats) -> dict:
        object_type = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._envelope(object_type, []), "usage": usage(stats)}


def full_body(shape: ResponseShape, completion: Completion, extras: Extras | None = None) -> dict:
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in completion.tool_calls
    ]
    body = shape.full(
        completion.content,
        completion.stats,
        completion.finish_reason,
        calls or None,
        completion.reasoning,
    )
    return {**body, **(extras(completion.stats) if extras else {})}


async def stream_chunks(
    shape: ResponseShape,
    events: AsyncIterator[OutputEvent],
    include_usage: bool,
    extras: Extras | None = None,
) -> AsyncIterator[dict | str]:
    if shape.kind == "chat":
        yield shape.chunk(None, role=True)
    async with aclosing(events):
        async for event in events:
            for chunk in _chunks_of(shape, event, include_usage, extras):
                yield chunk


def _chunks_of(
    shape: ResponseShape, event: OutputEvent, include_usage: bool, extras: Extras | None
) -> list[dict | str]:
    if isinstance(event, TextDelta):
        return [shape.text_chunk_json(event.text)]
    if isinstance(event, ReasoningDelta):
        # A text completion has nowhere to put it.
        return [shape.chunk(None, reasoning=event.text)] if shape.kind == "chat" else []
    if isinstance(event, ToolCallStart):
        call = {"index": event.index, "id": event.id, "type": "function"}
        call["function"] = {"name": event.name, "arguments": ""}
        return [shape.chunk(None, tool_calls=[call])]
    if isinstance(event, ToolArgumentsDelta):
        call = {"index": event.index, "function": {"arguments": event.delta}}
        return [shape.chunk(None, tool_calls=[call])]
    if isinstance(event, Finished):
        added = extras(event.stats) if extras else {}
        chunks = [{**shape.chunk(None, finish_reason=event.finish_reason), **added}]
        if include_usage:
            chunks.append({**shape.usage_chunk(event.stats), **added})
        return chunks
    return []


async def openai_response(
    kind: str,
    neutral: GenerateRequest,
    stream: bool,
    include_usage: bool,
    extras: ModelExtras | None = None,
) -> Response:
    """Prepare and run a chat ("chat") or text ("text") completion, streamed or whole."""
    prepared = await prepare(current_app.registry, neutral, current_app.limits)
    shape = ResponseShape(kind, neutral.response_id, prepared.model)
    added = functools.partial(extras, prepared.loaded) if extras else None
    if stream:
        return await sse_response(stream_chunks(shape, generate(prepared), include_usage, added))
    return jsonify(full_body(shape, await complete(prepared), added))
