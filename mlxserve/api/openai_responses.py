"""POST /v1/responses, the endpoint Codex uses: input items parsed into the neutral request, and
the output events rendered as OpenAI's documented event sequence. A non-streamed response is the
last event's response, so both carry the same output."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Blueprint, current_app, jsonify, request

from mlxserve.api.parsing import with_body
from mlxserve.api.responses import (
    ConversationStore,
    ResponsesRequest,
    function_call_item,
    input_turns,
    message_item,
    new_response_id,
    output_text,
    output_turns,
    reasoning_item,
    response_object,
)
from mlxserve.api.sse import sse_response
from mlxserve.pipeline.errors import RequestError
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
from mlxserve.pipeline.request import GenerateRequest, TextPart, Turn

blueprint = Blueprint("openai_responses", __name__, url_prefix="/v1")


@blueprint.record_once
def _create_store(state) -> None:
    state.app.response_store = ConversationStore()


@blueprint.post("/responses")
@with_body(ResponsesRequest)
async def create_response(body: ResponsesRequest):
    """OpenAI's Responses API: a response object, or its event stream."""
    store: ConversationStore = current_app.response_store
    history = store.conversation(body.previous_response_id) if body.previous_response_id else []
    conversation = history + input_turns(body)
    if not conversation:
        raise RequestError(
            400, "input: must hold at least one item", "input", "missing_required_parameter"
        )
    system = [Turn("system", [TextPart(body.instructions)])] if body.instructions else []
    response_id = new_response_id()
    neutral = GenerateRequest(
        model=body.model,
        sampling=body.to_sampling_params(),
        conversation=system + conversation,
        max_tokens=body.max_output_tokens,
        constraints=body.constraints(),
        prompt_param="input",
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
        response_id=response_id,
        endpoint=request.path,
    )
    prepared = await prepare(current_app.registry, neutral, current_app.limits)
    turn = ResponseTurn(body, response_id, prepared.model, conversation, store)
    events = turn.events(generate(prepared))
    if body.stream:
        return await sse_response(events, done_marker=False, named_events=True)
    final = [event async for event in events][-1]
    return jsonify(final["response"])


class ResponseTurn:
    """One response being produced: its output items, and the events that describe them."""

    def __init__(
        self,
        body: ResponsesRequest,
        response_id: str,
        model: str,
        conversation: list[Turn],
        store: ConversationStore,
    ):
        self.body, self.id, self.model = body, response_id, model
        self.conversation, self.store = conversation, store
        self.output: list[dict] = []  # finished items
        self._open: dict | None = None  # the item being generated
        self._sequence = itertools.count()

    def event(self, kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(self._sequence), **fields}

    async def events(self, outputs: AsyncIterator[OutputEvent]) -> AsyncIterator[dict]:
        started = response_object(self.body, self.id, self.model, [], None)
        yield self.event("response.created", response=started)
        yield self.event("response.in_progress", response=started)
        async with aclosing(outputs):
            async for output in outputs:
                for event in self.render(output):
                    yield event

    def render(self, output: OutputEvent) -> list[dict]:
        if isinstance(output, TextDelta):
            events = [] if self._kind == "message" else self._close() + self._open_message()
            self._open["text"] += output.text
            return events + [self._text_event("delta", delta=output.text)]
        if isinstance(output, ReasoningDelta):
            events = [] if self._kind == "reasoning" else self._close() + self._open_reasoning()
            self._open["text"] += output.text
            ids = {"item_id": self._open["id"], "output_index": len(self.output)}
            delta = self.event("response.reasoning_text.delta", **ids, content_index=0)
            return events + [{**delta, "delta": output.text}]
        if isinstance(output, ToolCallStart):
            return self._close() + self._open_call(output)
        if isinstance(output, ToolArgumentsDelta):
            self._open["arguments"] += output.delta
            ids = {"item_id": self._open["id"], "output_index": len(self.output)}
            return [self.event("response.function_call_arguments.delta", **ids, delta=output.delta)]
        return self._finish(output)

    @property
    def _kind(self) -> str | None:
        return self._open and self._open["type"]

    def _open_message(self) -> list[dict]:
        item = message_item("", f"msg_{uuid.uuid4().hex[:24]}", status="in_progress")
        self._open = {**item, "text": ""}
        return [
            self.event("response.output_item.added", output_index=len(self.output), item=item),
            self._text_event("content_part.added", part=output_text("")),
        ]

    def _open_reasoning(self) -> list[dict]:
        item = reasoning_item("", f"rs_{uuid.uuid4().hex[:24]}")
        self._open = {**item, "text": ""}
        return [self.event("response.output_item.added", output_index=len(self.output), item=item)]

    def _open_call(self, start: ToolCallStart) -> list[dict]:
        item = function_call_item(start.id, start.name, "", status="in_progress")
        self._open = item
        return [self.event("response.output_item.added", output_index=len(self.output), item=item)]

    def _text_event(self, kind: str, **fields) -> dict:
        ids = {"item_id": self._open["id"], "output_index": len(self.output), "content_index": 0}
        if kind in ("delta", "done"):
            return self.event(f"response.output_text.{kind}", **ids, **fields, logprobs=[])
        return self.event(f"response.{kind}", **ids, **fields)

    def _close(self) -> list[dict]:
        """The events that complete the open item, which then joins the output."""
        item, events = self._open, []
        if item is None:
            return []
        if item["type"] == "reasoning":
            text = item.pop("text")
            ids = {"item_id": item["id"], "output_index": len(self.output), "content_index": 0}
            events.append(self.event("response.reasoning_text.done", **ids, text=text))
            item = reasoning_item(text, item["id"])
        elif item["type"] == "message":
            text = item.pop("text")
            events.append(self._text_event("done", text=text))
            events.append(self._text_event("content_part.done", part=output_text(text)))
            item = message_item(text, item["id"])
        else:
            ids = {"item_id": item["id"], "output_index": len(self.output)}
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    **ids,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            item = {**item, "status": "completed"}
        events.append(
            self.event("response.output_item.done", output_index=len(self.output), item=item)
        )
        self.output.append(item)
        self._open = None
        return events

    def _finish(self, finished: Finished) -> list[dict]:
        events = self._close()
        if all(item["type"] == "reasoning" for item in self.output):
            # a reply with no answer still has one (empty) message
            events += self._open_message() + self._close()
        response = response_object(self.body, self.id, self.model, self.output, finished.stats)
        if self.body.store:
            self.store.put(self.id, self.conversation + output_turns(response))
        return events + [self.event("response.completed", response=response)]
