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
from mlxserve.pipeline.choices import (
    combined_stats,
    complete_choices,
    generate_choices,
    prepare_choices,
)
from mlxserve.pipeline.events import (
    Completion,
    Finished,
    OutputEvent,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
)
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
    ends: each choice's finish reason, then (when asked for) usage in a chunk of no choices."""

    chunk_type: type[ChatCompletionChunk] | type[TextCompletion]
    chunk_object: str  # the chunks' `object`

    def __init__(self, response_id: str, model: str, logprobs: bool = False):
        self.id, self.model, self.created = response_id, model, int(time.time())
        self.logprobs = logprobs  # asked for: every choice carries them, else null
        self.sent: dict[int, int] = {}  # characters each choice streamed: its tokens' offsets

    def fields(self) -> dict:
        return {
            "object": self.chunk_object,
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.model,
        }

    def usage_chunk(self, stats: GenerationStats):
        return self.chunk_type(choices=[], usage=usage(stats), **self.fields())


class ChatShape(Envelope):
    """A chat.completion, or its chat.completion.chunk stream."""

    chunk_type, chunk_object = ChatCompletionChunk, "chat.completion.chunk"

    def whole(self, completions: list[Completion], stats: GenerationStats) -> ChatCompletion:
        choices = [self._choice(index, c) for index, c in enumerate(completions)]
        whole = {**self.fields(), "object": "chat.completion"}
        return ChatCompletion(choices=choices, usage=usage(stats), **whole)

    def _choice(self, index: int, completion: Completion) -> ChatChoice:
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
        return ChatChoice(
            index=index,
            message=message,
            logprobs=chat_logprobs(completion.logprobs) if self.logprobs else None,
            finish_reason=completion.finish_reason,
        )

    def opening(self, index: int) -> list[ChatCompletionChunk]:
        return [self.chunk(index, ChatDelta(role="assistant", content=""))]

    def chunk(
        self, index: int, delta: ChatDelta, finish_reason: str | None = None, logprobs=None
    ) -> ChatCompletionChunk:
        choice = ChunkChoice(
            index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason
        )
        return ChatCompletionChunk(choices=[choice], **self.fields())

    def chunks_of(self, index: int, event: OutputEvent) -> list[ChatCompletionChunk]:
        if isinstance(event, TextDelta):
            logprobs = chat_logprobs(event.logprobs) if self.logprobs else None
            return [self.chunk(index, ChatDelta(content=event.text), logprobs=logprobs)]
        if isinstance(event, ReasoningDelta):
            return [self.chunk(index, ChatDelta(reasoning_content=event.text))]
        if isinstance(event, ToolCallStart):
            function = FunctionDelta(name=event.name, arguments="")
            call = ToolCallDelta(index=event.index, id=event.id, type="function", function=function)
            return [self.chunk(index, ChatDelta(tool_calls=[call]))]
        if isinstance(event, ToolArgumentsDelta):
            call = ToolCallDelta(index=event.index, function=FunctionDelta(arguments=event.delta))
            return [self.chunk(index, ChatDelta(tool_calls=[call]))]
        return []

    def finishing(self, index: int, finish_reason: str) -> ChatCompletionChunk:
        return self.chunk(index, ChatDelta(), finish_reason)


class TextShape(Envelope):
    """A text_completion, whole or streamed (its chunks are text_completion objects too)."""

    chunk_type, chunk_object = TextCompletion, "text_completion"

    def whole(self, completions: list[Completion], stats: GenerationStats) -> TextCompletion:
        choices = [
            TextChoice(
                index=index,
                text=c.content,
                logprobs=text_logprobs(c.logprobs) if self.logprobs else None,
                finish_reason=c.finish_reason,
            )
            for index, c in enumerate(completions)
        ]
        return TextCompletion(choices=choices, usage=usage(stats), **self.fields())

    def opening(self, index: int) -> list[TextCompletion]:
        return []

    def chunk(self, index: int, text: str, finish_reason: str | None = None) -> TextCompletion:
        choice = TextChoice(index=index, text=text, logprobs=None, finish_reason=finish_reason)
        return TextCompletion(choices=[choice], **self.fields())

    def chunks_of(self, index: int, event: OutputEvent) -> list[TextCompletion]:
        # A text completion has nowhere to put reasoning or calls: only its text.
        if not isinstance(event, TextDelta):
            return []
        chunk = self.chunk(index, event.text)
        if self.logprobs:
            sent = self.sent.get(index, 0)
            chunk.choices[0].logprobs = text_logprobs(event.logprobs, sent)
            self.sent[index] = sent + len(event.text)
        return [chunk]

    def finishing(self, index: int, finish_reason: str) -> TextCompletion:
        return self.chunk(index, "", finish_reason)


Shape = ChatShape | TextShape
SHAPES = {"chat": ChatShape, "text": TextShape}


async def stream_chunks(
    shape: Shape,
    events: AsyncIterator[tuple[int, OutputEvent]],
    choices: int,
    n: int,
    include_usage: bool,
    extras: Extras | None = None,
) -> AsyncIterator[str | dict]:
    """Each chunk as JSON text, every choice's (`events` tag each with its index) as they come;
    the last ones (the last choice's finish, then usage) with /api/v0's extras when any."""
    for index in range(choices):
        for chunk in shape.opening(index):
            yield chunk.json_text()
    finished: dict[int, GenerationStats] = {}
    async with aclosing(events):
        async for index, event in events:
            if not isinstance(event, Finished):
                for chunk in shape.chunks_of(index, event):
                    yield chunk.json_text()
                continue
            finished[index] = event.stats
            last = shape.finishing(index, event.finish_reason)
            if len(finished) < choices:
                yield last.json_text()
                continue
            stats = combined_stats([finished[i] for i in range(choices)], n)
            added = extras(stats) if extras else {}
            ending = [last, shape.usage_chunk(stats)] if include_usage else [last]
            for chunk in ending:
                yield {**chunk.as_dict(), **added}


def full_body(
    shape: Shape, completions: list[Completion], n: int, extras: Extras | None = None
) -> dict:
    stats = combined_stats([c.stats for c in completions], n)
    body = shape.whole(completions, stats).as_dict()
    return {**body, **(extras(stats) if extras else {})}


async def openai_response(
    kind: str,
    requests: list[GenerateRequest],
    n: int,
    stream: bool,
    include_usage: bool,
    extras: ModelExtras | None = None,
) -> Response:
    """Prepare and run a chat ("chat") or text ("text") completion, streamed or whole: the n
    choices of each request, generated together (choice index = request index * n + i)."""
    state = server_state()
    choices = await prepare_choices(state.registry, requests, n, state.limits)
    logprobs = requests[0].top_logprobs is not None
    shape = SHAPES[kind](requests[0].response_id, choices[0].model, logprobs)
    added = functools.partial(extras, choices[0].loaded) if extras else None
    if stream:
        events = generate_choices(choices)
        return await sse_response(
            stream_chunks(shape, events, len(choices), n, include_usage, added)
        )
    return jsonify(full_body(shape, await complete_choices(choices), n, added))
