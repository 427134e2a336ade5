"""OpenAI's chat completion and text completion objects, streamed and whole, rendered from the
pipeline's output events."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from quart import Response, jsonify

from mlxserve.api.http.sse import sse_response
from mlxserve.api.openai.logprobs import chat_logprobs, text_logprobs
from mlxserve.api.openai.objects import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChunkChoice,
    CompletionTokensDetails,
    FunctionCall,
    FunctionDelta,
    PromptTokensDetails,
    TextChoice,
    TextCompletion,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from mlxserve.api.state import server_state
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


def usage(stats: GenerationStats) -> Usage:
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_prompt_tokens),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=stats.reasoning_tokens),
    )


class Envelope:
    """What one response's objects share: id, created time and model; and how its stream
    ends: the finish reason, then (when asked for) usage in a chunk of no choices."""

    chunk_type: type[ChatCompletionChunk] | type[TextCompletion]
    chunk_object: str  # the chunks' `object`

    def __init__(self, response_id: str, model: str, logprobs: bool = False):
        self.id, self.model, self.created = response_id, model, int(time.time())
        self.logprobs = logprobs  # asked for: every choice carries them, else null

    def fields(self) -> dict:
        return {
            "object": self.chunk_object,
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.model,
        }

    def ending(self, finished: Finished, with_usage: bool) -> list:
        chunks = [self.finishing(finished.finish_reason)]
        if with_usage:
            chunks.append(self.chunk_type(choices=[], usage=usage(finished.stats), **self.fields()))
        return chunks


class ChatShape(Envelope):
    """A chat.completion, or its chat.completion.chunk stream."""

    chunk_type, chunk_object = ChatCompletionChunk, "chat.completion.chunk"

    def whole(self, completion: Completion) -> ChatCompletion:
        calls = [
            ToolCall(
                id=c.id, type="function", function=FunctionCall(name=c.name, arguments=c.arguments)
            )
            for c in completion.tool_calls
        ]
        message = AssistantMessage(
            role="assistant", content=(completion.content or None) if calls else completion.content
        )
        if completion.reasoning:
            message.reasoning_content = completion.reasoning
        if calls:
            message.tool_calls = calls
        choice = ChatChoice(
            index=0,
            message=message,
            logprobs=chat_logprobs(completion.logprobs) if self.logprobs else None,
            finish_reason=completion.finish_reason,
        )
        whole = {**self.fields(), "object": "chat.completion"}
        return ChatCompletion(choices=[choice], usage=usage(completion.stats), **whole)

    def opening(self) -> list[ChatCompletionChunk]:
        return [self.chunk(ChatDelta(role="assistant", content=""))]

    def chunk(
        self, delta: ChatDelta, finish_reason: str | None = None, logprobs=None
    ) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, logprobs=logprobs, finish_reason=finish_reason)
        return ChatCompletionChunk(choices=[choice], **self.fields())

    def chunks_of(self, event: OutputEvent) -> list[ChatCompletionChunk]:
        if isinstance(event, TextDelta):
            logprobs = chat_logprobs(event.logprobs) if self.logprobs else None
            return [self.chunk(ChatDelta(content=event.text), logprobs=logprobs)]
        if isinstance(event, ReasoningDelta):
            return [self.chunk(ChatDelta(reasoning_content=event.text))]
        if isinstance(event, ToolCallStart):
            function = FunctionDelta(name=event.name, arguments="")
            call = ToolCallDelta(index=event.index, id=event.id, type="function", function=function)
            return [self.chunk(ChatDelta(tool_calls=[call]))]
        if isinstance(event, ToolArgumentsDelta):
            call = ToolCallDelta(index=event.index, function=FunctionDelta(arguments=event.delta))
            return [self.chunk(ChatDelta(tool_calls=[call]))]
        return []

    def finishing(self, finish_reason: str) -> ChatCompletionChunk:
        return self.chunk(ChatDelta(), finish_reason)


class TextShape(Envelope):
    """A text_completion, whole or streamed (its chunks are text_completion objects too)."""

    chunk_type, chunk_object = TextCompletion, "text_completion"
    sent = 0  # characters streamed so far: where the next chunk's tokens start

    def whole(self, completion: Completion) -> TextCompletion:
        answer = self.chunk(completion.content, completion.finish_reason, usage(completion.stats))
        if self.logprobs:
            answer.choices[0].logprobs = text_logprobs(completion.logprobs)
        return answer

    def opening(self) -> list[TextCompletion]:
        return []

    def chunk(
        self, text: str, finish_reason: str | None = None, usage_: Usage | None = None
    ) -> TextCompletion:
        choice = TextChoice(index=0, text=text, logprobs=None, finish_reason=finish_reason)
        completion = TextCompletion(choices=[choice], **self.fields())
        if usage_ is not None:
            completion.usage = usage_
        return completion

    def chunks_of(self, event: OutputEvent) -> list[TextCompletion]:
        # A text completion has nowhere to put reasoning or calls: only its text.
        if not isinstance(event, TextDelta):
            return []
        chunk = self.chunk(event.text)
        if self.logprobs:
            chunk.choices[0].logprobs = text_logprobs(event.logprobs, self.sent)
        self.sent += len(event.text)
        return [chunk]

    def finishing(self, finish_reason: str) -> TextCompletion:
        return self.chunk("", finish_reason)


Shape = ChatShape | TextShape
SHAPES = {"chat": ChatShape, "text": TextShape}


async def stream_chunks(
    shape: Shape,
    events: AsyncIterator[OutputEvent],
    include_usage: bool,
    extras: Extras | None = None,
) -> AsyncIterator[str | dict]:
    """Each chunk as JSON text; the last ones with /api/v0's extras when there are any."""
    for chunk in shape.opening():
        yield chunk.json_text()
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                added = extras(event.stats) if extras else {}
                for chunk in shape.ending(event, include_usage):
                    yield {**chunk.as_dict(), **added}
                continue
            for chunk in shape.chunks_of(event):
                yield chunk.json_text()


def full_body(shape: Shape, completion: Completion, extras: Extras | None = None) -> dict:
    body = shape.whole(completion).as_dict()
    return {**body, **(extras(completion.stats) if extras else {})}


async def openai_response(
    kind: str,
    neutral: GenerateRequest,
    stream: bool,
    include_usage: bool,
    extras: ModelExtras | None = None,
) -> Response:
    """Prepare and run a chat ("chat") or text ("text") completion, streamed or whole."""
    state = server_state()
    prepared = await prepare(state.registry, neutral, state.limits)
    shape = SHAPES[kind](neutral.response_id, prepared.model, neutral.top_logprobs is not None)
    added = functools.partial(extras, prepared.loaded) if extras else None
    if stream:
        return await sse_response(stream_chunks(shape, generate(prepared), include_usage, added))
    return jsonify(full_body(shape, await complete(prepared), added))
