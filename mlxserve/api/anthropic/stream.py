"""Output events rendered as Anthropic's message stream events; a whole (non-streamed) message
is the message those events build."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from mlxserve.api.anthropic.answers import (
    AnthropicBlock,
    AnthropicContextManagement,
    AnthropicMessage,
    AnthropicTextBlock,
    AnthropicThinkingBlock,
    AnthropicToolUseBlock,
    AnthropicUsage,
)
from mlxserve.api.shared.item_stream import REASONING, TEXT, ItemStream
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.events import Finished, OutputEvent, TextDelta


@dataclass(frozen=True)
class Reply:
    """What the message says of the request behind it."""

    id: str
    model: str  # the name the client asked for
    prompt_tokens: int
    max_tokens: int  # the client's own limit
    context_length: int  # of the loaded model
    shows_thinking: bool = True  # False: thinking blocks carry no text (display "omitted")
    context_management: AnthropicContextManagement | None = None  # the edits, when asked for


class MessageBuilder(ItemStream):
    """The message being generated: its content blocks, and the stream events that build it."""

    def __init__(self, reply: Reply):
        self.reply = reply
        self.blocks: list[AnthropicBlock] = []
        self.arguments: dict[int, str] = {}  # a tool_use block's input as JSON text, by index
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage = AnthropicUsage(input_tokens=reply.prompt_tokens, output_tokens=0)

    async def events(self, outputs: AsyncIterator[OutputEvent]) -> AsyncIterator[dict]:
        yield {"type": "message_start", "message": self.message([]).as_dict()}
        yield {"type": "ping"}
        async with aclosing(outputs):
            async for output in outputs:
                for event in self.render(output):
                    yield event

    def render(self, output: OutputEvent) -> list[dict]:
        if isinstance(output, TextDelta) and not output.text:
            return []  # no empty text block
        return self.render_output(output)

    def open(self, kind: str, output: OutputEvent) -> list[dict]:
        index = len(self.blocks)
        if kind == TEXT:
            block = AnthropicTextBlock(type="text", text="")
        elif kind == REASONING:
            block = AnthropicThinkingBlock(type="thinking", thinking="", signature="")
        else:
            block = AnthropicToolUseBlock(type="tool_use", id=output.id, name=output.name, input={})
            self.arguments[index] = ""
        self.blocks.append(block)
        return [{"type": "content_block_start", "index": index, "content_block": block.as_dict()}]

    def extend(self, kind: str, output: OutputEvent) -> list[dict]:
        block = self.blocks[-1]
        if kind == TEXT:
            block.text += output.text
            return [self.delta({"type": "text_delta", "text": output.text})]
        if kind == REASONING:
            if not self.reply.shows_thinking:
                return []
            block.thinking += output.text
            return [self.delta({"type": "thinking_delta", "thinking": output.text})]
        self.arguments[len(self.blocks) - 1] += output.delta
        return [self.delta({"type": "input_json_delta", "partial_json": output.delta})]

    def closing(self, kind: str) -> list[dict]:
        return [{"type": "content_block_stop", "index": len(self.blocks) - 1}]

    def delta(self, delta: dict) -> dict:
        return {"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta}

    def finish(self, finished: Finished) -> list[dict]:
        self.stop_reason, self.stop_sequence = stop_reason(finished, self.reply)
        self.usage = _usage(finished.stats)
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        message_delta = {"type": "message_delta", "delta": delta, "usage": self.usage.as_dict()}
        if self.reply.context_management is not None:
            message_delta["context_management"] = self.reply.context_management.as_dict()
        return [message_delta, {"type": "message_stop"}]

    def message(self, content: list[AnthropicBlock]) -> AnthropicMessage:
        message = AnthropicMessage(
            id=self.reply.id,
            type="message",
            role="assistant",
            model=self.reply.model,
            content=content,
            stop_reason=self.stop_reason,
            stop_sequence=self.stop_sequence,
            usage=self.usage,
        )
        if self.reply.context_management is not None:
            message.context_management = self.reply.context_management
        return message

    def whole(self) -> dict:
        """The finished message, each tool_use block's input read from its JSON text."""
        content = [
            block.model_copy(update={"input": complete_members(self.arguments[index])})
            if index in self.arguments
            else block
            for index, block in enumerate(self.blocks)
        ]
        return self.message(content).as_dict()


def stop_reason(finished: Finished, reply: Reply) -> tuple[str, str | None]:
    """Anthropic's stop reason. A reply cut short is `max_tokens` only at the client's own
    limit; one that filled the context is `model_context_window_exceeded`; one the server's
    --max-tokens ceiling ended is `end_turn` (an operator's choice of reply length, which
    agents must not take for a failure)."""
    stats = finished.stats
    if finished.finish_reason == "tool_calls":
        return "tool_use", None
    if finished.finish_reason == "length":
        if stats.completion_tokens >= reply.max_tokens:
            return "max_tokens", None
        if stats.prompt_tokens + stats.completion_tokens >= reply.context_length:
            return "model_context_window_exceeded", None
        return "end_turn", None
    if stats.stop_reason == "stopStringFound":
        return "stop_sequence", stats.stop_string
    return "end_turn", None


def complete_members(arguments: str) -> dict:
    """A call's JSON arguments as an object; of arguments cut short, the members written in
    full (those a comma follows), or {} when none are."""
    candidates, closers, in_string, escaped = [arguments], [], False, False
    for position, char in enumerate(arguments):
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]" and closers:
            closers.pop()
        elif char == ",":
            candidates.append(arguments[:position] + "".join(reversed(closers)))
    for candidate in [candidates[0], *reversed(candidates[1:])]:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _usage(stats: GenerationStats) -> AnthropicUsage:
    """Anthropic counts prompt tokens read from the cache apart from the rest."""
    return AnthropicUsage(
        input_tokens=stats.prompt_tokens - stats.cached_prompt_tokens,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=stats.cached_prompt_tokens,
        output_tokens=stats.completion_tokens,
    )
