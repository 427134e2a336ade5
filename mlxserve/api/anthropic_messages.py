"""Anthropic's Messages API (/v1/messages), as Claude Code and the Anthropic SDKs speak it: the
request parsed into the neutral request, the output events rendered as Anthropic's stream
events. A whole (non-streamed) message is the message those events build."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Blueprint, current_app, jsonify, request

from mlxserve.api.anthropic_protocol import CountTokensRequest, MessagesRequest
from mlxserve.api.errors import anthropic_body
from mlxserve.api.formatting import new_id
from mlxserve.api.parsing import with_body
from mlxserve.api.protocol import sampling_params
from mlxserve.api.sse import sse_response
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.events import (
    Finished,
    OutputEvent,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
)
from mlxserve.pipeline.generate import generate
from mlxserve.pipeline.prepare import prepare
from mlxserve.pipeline.request import GenerateRequest
from mlxserve.sampling.params import SamplingParams

blueprint = Blueprint("anthropic_messages", __name__)


@blueprint.post("/v1/messages")
@with_body(MessagesRequest)
async def create_message(body: MessagesRequest):
    """Anthropic's Messages API: a message, streamed as its events or whole."""
    neutral = to_request(body, body.max_tokens, body.to_sampling_params())
    neutral.stop = body.stop_sequences or []
    prepared = await prepare(current_app.registry, neutral, current_app.limits)
    message = MessageBuilder(neutral.response_id, body.model, len(_prompt_of(prepared)))
    events = message.events(generate(prepared))
    if body.stream:
        return await sse_response(
            events, done_marker=False, named_events=True, error_body=anthropic_body
        )
    async for _ in events:
        pass
    return jsonify(message.whole())


@blueprint.post("/v1/messages/count_tokens")
@with_body(CountTokensRequest)
async def count_tokens(body: CountTokensRequest):
    """The number of input tokens a message request would use."""
    neutral = to_request(body, None, sampling_params())
    prepared = await prepare(current_app.registry, neutral, current_app.limits)
    prepared.release()  # measured, never generated
    return {"input_tokens": len(_prompt_of(prepared))}


def to_request(
    body: CountTokensRequest, max_tokens: int | None, sampling: SamplingParams
) -> GenerateRequest:
    return GenerateRequest(
        model=body.model,
        sampling=sampling,
        conversation=body.conversation(),
        max_tokens=max_tokens,
        constraints=body.constraints(),
        reasoning_effort=body.reasoning_effort,
        clamp_max_tokens=True,  # clients ask for far more than a local context holds
        response_id=new_id("msg"),
        endpoint=request.path,
    )


def _prompt_of(prepared) -> list[int]:
    return prepared.engine_request.prompt_tokens or []


class MessageBuilder:
    """The message being generated: its content blocks, and the stream events that build it."""

    def __init__(self, message_id: str, model: str, prompt_tokens: int):
        self.id, self.model, self.prompt_tokens = message_id, model, prompt_tokens
        self.blocks: list[dict] = []  # tool_use inputs held as JSON text until the end
        self.open = False
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage = {"input_tokens": prompt_tokens, "output_tokens": 0}

    async def events(self, outputs: AsyncIterator[OutputEvent]) -> AsyncIterator[dict]:
        yield {"type": "message_start", "message": self.envelope([])}
        yield {"type": "ping"}
        async with aclosing(outputs):
            async for output in outputs:
                for event in self.render(output):
                    yield event

    def render(self, output: OutputEvent) -> list[dict]:
        if isinstance(output, TextDelta):
            if not output.text:
                return []
            started = self.start_block({"type": "text", "text": ""}, reuse="text")
            self.blocks[-1]["text"] += output.text
            delta = {"type": "text_delta", "text": output.text}
            return started + [self.delta(delta)]
        if isinstance(output, ReasoningDelta):
            block = {"type": "thinking", "thinking": "", "signature": ""}
            started = self.start_block(block, reuse="thinking")
            self.blocks[-1]["thinking"] += output.text
            delta = {"type": "thinking_delta", "thinking": output.text}
            return started + [self.delta(delta)]
        if isinstance(output, ToolCallStart):
            block = {"type": "tool_use", "id": output.id, "name": output.name, "input": {}}
            started = self.start_block(block)
            self.blocks[-1]["arguments"] = ""
            return started
        if isinstance(output, ToolArgumentsDelta):
            self.blocks[-1]["arguments"] += output.delta
            return [self.delta({"type": "input_json_delta", "partial_json": output.delta})]
        return self.finish(output)

    def start_block(self, block: dict, reuse: str | None = None) -> list[dict]:
        """Events that open `block`, closing the open one; none when the open block is of the
        `reuse` type and takes the new content."""
        if self.open and reuse and self.blocks[-1]["type"] == reuse:
            return []
        events = self.close_block()
        self.blocks.append(dict(block))
        self.open = True
        index = len(self.blocks) - 1
        return events + [{"type": "content_block_start", "index": index, "content_block": block}]

    def close_block(self) -> list[dict]:
        if not self.open:
            return []
        self.open = False
        return [{"type": "content_block_stop", "index": len(self.blocks) - 1}]

    def delta(self, delta: dict) -> dict:
        return {"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta}

    def finish(self, finished: Finished) -> list[dict]:
        self.stop_reason, self.stop_sequence = _stop_reason(finished)
        self.usage = _usage(finished.stats)
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        return self.close_block() + [
            {"type": "message_delta", "delta": delta, "usage": self.usage},
            {"type": "message_stop"},
        ]

    def envelope(self, content: list[dict]) -> dict:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage,
        }

    def whole(self) -> dict:
        return self.envelope([_final_block(block) for block in self.blocks])


def _final_block(block: dict) -> dict:
    if block["type"] != "tool_use":
        return block
    arguments = block.pop("arguments")
    return {**block, "input": json.loads(arguments) if arguments.strip() else {}}


def _stop_reason(finished: Finished) -> tuple[str, str | None]:
    if finished.finish_reason == "tool_calls":
        return "tool_use", None
    if finished.finish_reason == "length":
        return "max_tokens", None
    if finished.stats.stop_reason == "stopStringFound":
        return "stop_sequence", finished.stats.stop_string
    return "end_turn", None


def _usage(stats: GenerationStats) -> dict:
    """Anthropic counts prompt tokens read from the cache apart from the rest."""
    return {
        "input_tokens": stats.prompt_tokens - stats.cached_prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": stats.cached_prompt_tokens,
        "output_tokens": stats.completion_tokens,
    }
