"""One /api/v1/chat reply as LM Studio renders it: output items (`reasoning`, `message`,
`tool_call`, `invalid_tool_call`) and the stream's named events, the tool calls' in LM Studio's
order (`tool_call.start`, `tool_call.arguments`, then `tool_call.success` once the server
answered, or `tool_call.failure`). The last event, chat.end, holds the whole result, which is
also the answer when not streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from mlxserve.api.http.errors import from_exception
from mlxserve.api.lmstudio.answers import (
    V1ChatResult,
    V1ChatStats,
    V1InvalidCallMetadata,
    V1InvalidToolCallItem,
    V1OutputItem,
    V1TextItem,
    V1ToolCallItem,
)
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.api.shared.item_stream import CALL, REASONING, TEXT, ItemStream
from mlxserve.engine.base import GenerationStats
from mlxserve.mcp.loop import LoopEvent, McpCallFinished, McpCallStarted, ToolLoop
from mlxserve.mcp.servers import INVALID_PARAMS
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.events import Finished, OutputEvent, ToolCallStart
from mlxserve.pipeline.request import TextPart, Turn

# LM Studio's error types for servers that cannot be used, by mlxserve's codes
CONNECTION_ERRORS = ("mcp_connection_error", "plugin_connection_error")
ITEM_TYPES = {TEXT: "message", REASONING: "reasoning"}  # LM Studio's names for the items


@dataclass
class ChatReply(ItemStream):
    """One reply: the tool loop's events as LM Studio's stream events."""

    instance_id: str
    response_id: str | None  # None when the chat is not stored
    load_seconds: float | None  # set when this request loaded the model
    conversation: list[Turn]
    store: ConversationStore
    loop: ToolLoop | None = None  # the tool loop behind the events, whose turns are stored
    items: list[V1OutputItem] = field(default_factory=list, init=False)
    _calls: dict[str, dict] = field(default_factory=dict, init=False)  # by id, until they end

    async def events(self, outputs: AsyncIterator[LoopEvent]) -> AsyncIterator[dict]:
        yield {"type": "chat.start", "model_instance_id": self.instance_id}
        if self.load_seconds is not None:
            yield {"type": "model_load.start", "model_instance_id": self.instance_id}
            yield {
                "type": "model_load.end",
                "model_instance_id": self.instance_id,
                "load_time_seconds": self.load_seconds,
            }
        yield {"type": "prompt_processing.start"}
        processing = True
        async with aclosing(outputs):
            async for output in outputs:
                if processing:  # the first output comes once the prompt has been read
                    processing = False
                    yield {"type": "prompt_processing.end"}
                for event in self._render(output):
                    yield event

    async def in_band_errors(self, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """A failure mid-stream becomes an `error` event, then chat.end with what was made."""
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        except Exception as exc:  # noqa: BLE001 - reported to the client in-band
            yield {"type": "error", "error": error_fields(from_exception(exc))}
            yield {"type": "chat.end", "result": self.result(None).as_dict()}

    def _render(self, output: LoopEvent) -> list[dict]:
        if isinstance(output, McpCallStarted):
            call = self._calls[output.call.id]
            arguments = _object(call["arguments"])
            if arguments is None:
                return []
            return [{"type": "tool_call.arguments", **_named(call), "arguments": arguments}]
        if isinstance(output, McpCallFinished):
            return self._end_call(output)
        return self.render_output(output)

    def open(self, kind: str, output: OutputEvent) -> list[dict]:
        if kind == CALL:
            return self._start_call(output)
        self.items.append(V1TextItem(type=ITEM_TYPES[kind], content=""))
        return [{"type": f"{ITEM_TYPES[kind]}.start"}]

    def extend(self, kind: str, output: OutputEvent) -> list[dict]:
        if kind == CALL:  # the arguments are shown whole, once the call is made
            next(reversed(self._calls.values()))["arguments"] += output.delta
            return []
        self.items[-1].content += output.text
        return [{"type": f"{ITEM_TYPES[kind]}.delta", "content": output.text}]

    def closing(self, kind: str) -> list[dict]:
        return [] if kind == CALL else [{"type": f"{ITEM_TYPES[kind]}.end"}]

    def _start_call(self, start: ToolCallStart) -> list[dict]:
        tool = self.loop.toolbox.get(start.name) if self.loop and self.loop.toolbox else None
        provider = tool.provider if tool is not None else {}
        call = {"tool": start.name, "provider_info": provider, "arguments": ""}
        self._calls[start.id] = call
        return [{"type": "tool_call.start", **_named(call)}]

    def _end_call(self, finished: McpCallFinished) -> list[dict]:
        call, outcome = self._calls.pop(finished.call.id), finished.outcome
        arguments = _object(call["arguments"])
        invalid = outcome.error and outcome.error.get("code") == INVALID_PARAMS
        if arguments is None or invalid:
            return self._invalid(call, outcome.text.removeprefix("error: "))
        output = json.dumps(outcome.content) if outcome.content else outcome.text
        item = V1ToolCallItem(type="tool_call", **_named(call), arguments=arguments, output=output)
        self.items.append(item)
        return [{**item.as_dict(), "type": "tool_call.success"}]

    def _invalid(self, call: dict, reason: str) -> list[dict]:
        """A call that could not be made: an invalid_tool_call item and a failure event."""
        metadata = V1InvalidCallMetadata(
            type="invalid_arguments", tool_name=call["tool"], provider_info=call["provider_info"]
        )
        arguments = _object(call["arguments"])
        if arguments is not None:
            metadata.arguments = arguments
        item = V1InvalidToolCallItem(type="invalid_tool_call", reason=reason, metadata=metadata)
        self.items.append(item)
        return [{**item.as_dict(), "type": "tool_call.failure"}]

    def finish(self, finished: Finished) -> list[dict]:
        events = []
        for call in list(self._calls.values()):  # calls that were never made: cut short
            events += self._invalid(call, "the call was cut short by max_output_tokens")
        self._calls.clear()
        if self.response_id is not None:
            self.store.put(self.response_id, self._turns())
        return events + [{"type": "chat.end", "result": self.result(finished.stats).as_dict()}]

    def _turns(self) -> list[Turn]:
        if self.loop is not None:
            return self.loop.conversation  # every round's calls and results, and the reply
        text = "".join(item.content for item in self.items if item.type == "message")
        return [*self.conversation, Turn("assistant", [TextPart(text)])]

    def result(self, stats: GenerationStats | None) -> V1ChatResult:
        """The non-streamed answer; without stats (a failed stream) it is neither measured nor
        stored."""
        result = V1ChatResult(model_instance_id=self.instance_id, output=self.items)
        if stats is not None:
            result.stats = self._stats(stats)
            if self.response_id is not None:
                result.response_id = self.response_id
        return result

    def _stats(self, stats: GenerationStats) -> V1ChatStats:
        figures = V1ChatStats(
            input_tokens=stats.prompt_tokens,
            total_output_tokens=stats.completion_tokens,
            reasoning_output_tokens=stats.reasoning_tokens,
            tokens_per_second=stats.tokens_per_second,
            time_to_first_token_seconds=stats.time_to_first_token,
            stop_reason=stats.stop_reason,
        )
        if self.load_seconds is not None:
            figures.model_load_time_seconds = self.load_seconds
        return figures


def _named(call: dict) -> dict:
    return {"tool": call["tool"], "provider_info": call["provider_info"]}


def _object(arguments: str) -> dict | None:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def error_fields(error: RequestError) -> dict:
    """LM Studio's error object for stream events: its coarse type, the detail in `code`."""
    kind = "invalid_request" if error.status < 500 else "internal_error"
    if error.code == "model_not_found" or error.code in CONNECTION_ERRORS:
        kind = error.code
    fields = {"type": kind, "message": error.message, "code": error.code, "param": error.param}
    return {key: value for key, value in fields.items() if value is not None}
