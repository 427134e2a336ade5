"""The pipeline's output events as Ollama's chunks: text as `message.content` (chat) or
`response` (generate), reasoning as `thinking`, each tool call whole once its arguments are
complete (Ollama sends arguments as an object, never in pieces), and a last `done` chunk with
the engine's figures in nanoseconds."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime

from mlxserve.api.ollama.answers import (
    AssistantMessage,
    CallFunction,
    ChatChunk,
    Chunk,
    GenerateChunk,
    OllamaToolCall,
)
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

log = logging.getLogger(__name__)
NANOSECONDS = 1_000_000_000


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def nanoseconds(seconds: float) -> int:
    return round(seconds * NANOSECONDS)


def call_arguments(text: str) -> dict:
    """A call's arguments as the object Ollama sends; the output stage has checked them, so
    anything else is logged and sent empty."""
    try:
        arguments = json.loads(text or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        log.warning("tool call arguments are not a JSON object: %r", text)
        return {}
    return arguments


class Reply:
    """One answer's chunks, chat's (`chat`) or generate's: `started` is the request's arrival
    (time.monotonic), `load_seconds` what loading the model for it took."""

    def __init__(self, chat: bool, model: str, started: float, load_seconds: float):
        self.chat, self.model = chat, model
        self.started, self.load_seconds = started, load_seconds
        self.calls: list[list[str]] = []  # [name, arguments so far] of calls not yet sent

    def chunk(self, text: str = "", thinking: str = "", calls=None, **figures) -> Chunk:
        done = bool(figures)
        fields = {"model": self.model, "created_at": timestamp(), "done": done, **figures}
        if self.chat:
            message = AssistantMessage(role="assistant", content=text)
            if thinking:
                message.thinking = thinking
            if calls:
                message.tool_calls = calls
            return ChatChunk(message=message, **fields)
        answer = GenerateChunk(response=text, **fields)
        if thinking:
            answer.thinking = thinking
        return answer

    def figures(self, finish_reason: str, stats: GenerationStats) -> dict:
        return {
            "done_reason": "length" if finish_reason == "length" else "stop",
            "total_duration": nanoseconds(time.monotonic() - self.started),
            "load_duration": nanoseconds(self.load_seconds),
            "prompt_eval_count": stats.prompt_tokens,
            "prompt_eval_duration": nanoseconds(stats.time_to_first_token),
            "eval_count": stats.completion_tokens,
            "eval_duration": nanoseconds(stats.generation_time),
        }

    def chunks_of(self, event: OutputEvent) -> list[Chunk]:
        if isinstance(event, ToolCallStart):
            sent = self.flush_calls()
            self.calls.append([event.name, ""])
            return sent
        if isinstance(event, ToolArgumentsDelta):
            self.calls[-1][1] += event.delta
            return []
        if isinstance(event, Finished):
            ending = self.chunk(**self.figures(event.finish_reason, event.stats))
            return [*self.flush_calls(), ending]
        if isinstance(event, ReasoningDelta):
            return [self.chunk(thinking=event.text)]
        return [self.chunk(text=event.text)] if isinstance(event, TextDelta) else []

    def flush_calls(self) -> list[Chunk]:
        """The calls whose arguments are complete, in one chunk (chat only: generate has none)."""
        calls, self.calls = self.calls, []
        if not calls or not self.chat:
            return []
        return [self.chunk(calls=[tool_call(name, arguments) for name, arguments in calls])]

    async def stream(self, events: AsyncIterator[OutputEvent]) -> AsyncIterator[dict]:
        async with aclosing(events):
            async for event in events:
                for chunk in self.chunks_of(event):
                    yield chunk.as_dict()

    def whole(self, completion: Completion) -> dict:
        figures = self.figures(completion.finish_reason, completion.stats)
        calls = [tool_call(c.name, c.arguments) for c in completion.tool_calls]
        answer = self.chunk(completion.content, completion.reasoning, calls, **figures)
        return answer.as_dict()

    def lifecycle(self, reason: str) -> dict:
        """The answer to a request that only loads or unloads its model."""
        return self.chunk(done_reason=reason).as_dict()


def tool_call(name: str, arguments: str) -> OllamaToolCall:
    return OllamaToolCall(function=CallFunction(name=name, arguments=call_arguments(arguments)))
