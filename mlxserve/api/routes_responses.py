"""POST /v1/responses: the endpoint Codex uses, streaming OpenAI's documented event sequence."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

from quart import Blueprint, current_app, jsonify

from mlxserve.api import serving
from mlxserve.api.parsing import parse_body
from mlxserve.api.protocol import ChatCompletionRequest
from mlxserve.api.responses import (
    ResponsesRequest,
    ResponseStore,
    chat_tools,
    function_call_item,
    input_messages,
    message_item,
    new_response_id,
    output_text,
    response_object,
)
from mlxserve.api.sse import sse_response
from mlxserve.api.tool_parsers import parse_tool_calls

blueprint = Blueprint("responses", __name__, url_prefix="/v1")


@blueprint.record_once
def _create_store(state) -> None:
    state.app.response_store = ResponseStore()


@blueprint.post("/responses")
async def create_response():
    body = await parse_body(ResponsesRequest)
    store: ResponseStore = current_app.response_store
    history = store.conversation(body.previous_response_id) if body.previous_response_id else []
    conversation = history + input_messages(body)
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    chat = ChatCompletionRequest.model_validate(
        {
            "model": body.model,
            "messages": system + conversation,
            "max_tokens": body.max_output_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "tools": chat_tools(body.tools),
            "tool_choice": body.tool_choice,
        }
    )
    prepared = await serving.prepare_chat(current_app.registry, chat, prompt_param="input")
    turn = ResponseTurn(body, prepared.shape.model, prepared.tool_family, conversation, store)
    if body.stream:
        return await sse_response(turn.events(prepared), done_marker=False, named_events=True)
    text, stats = await serving.run_to_end(prepared)
    return jsonify(turn.finish(turn.output_items(text), stats))


class ResponseTurn:
    """One response being produced: its id, output items, and the events that describe it."""

    def __init__(
        self,
        body: ResponsesRequest,
        model: str,
        tool_family: str | None,
        conversation: list[dict],
        store: ResponseStore,
    ):
        self.body, self.model, self.tool_family = body, model, tool_family
        self.conversation, self.store = conversation, store
        self.id = new_response_id()
        self._sequence = itertools.count()

    def output_items(self, text: str) -> list[dict]:
        if self.tool_family:
            content, calls = parse_tool_calls(text, self.tool_family)
            if calls:
                return [function_call_item(call) for call in calls]
        return [message_item(text, f"msg_{uuid.uuid4().hex[:24]}")]

    def finish(self, output: list[dict], stats) -> dict:
        response = response_object(self.body, self.id, self.model, output, stats)
        if self.body.store:
            self.store.put(response, self.conversation)
        return response

    def event(self, kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(self._sequence), **fields}

    def started_events(self) -> list[dict]:
        started = response_object(self.body, self.id, self.model, [], None)
        return [
            self.event("response.created", response=started),
            self.event("response.in_progress", response=started),
        ]

    async def events(self, prepared) -> AsyncIterator[dict]:
        for event in self.started_events():
            yield event
        if self.tool_family:
            # A call is only told apart from text once the reply is complete.
            text, stats = await serving.run_to_end(prepared)
            output = self.output_items(text)
            async for event in self.output_events(output):
                yield event
        else:
            item = message_item("", f"msg_{uuid.uuid4().hex[:24]}")
            deltas = _text_of(serving.generate(prepared))
            async for event in self._message_events(item, 0, deltas):
                yield event
            output, stats = [item], prepared.stats
        yield self.event("response.completed", response=self.finish(output, stats))

    async def output_events(self, output: list[dict]) -> AsyncIterator[dict]:
        """Events for output items whose content is already known."""
        for index, item in enumerate(output):
            if item["type"] == "function_call":
                async for event in self._function_call_events(item, index):
                    yield event
            else:
                text = "".join(part["text"] for part in item["content"])
                async for event in self._message_events(item, index, _once(text)):
                    yield event

    async def _message_events(self, item: dict, index: int, deltas) -> AsyncIterator[dict]:
        ids = {"item_id": item["id"], "output_index": index}
        yield self.event(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "content": []},
        )
        yield self.event(
            "response.content_part.added", **ids, content_index=0, part=output_text("")
        )
        text = ""
        async for delta in deltas:
            text += delta
            yield self.event(
                "response.output_text.delta", **ids, content_index=0, delta=delta, logprobs=[]
            )
        yield self.event(
            "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
        )
        yield self.event(
            "response.content_part.done", **ids, content_index=0, part=output_text(text)
        )
        item.update(status="completed", content=[output_text(text)])
        yield self.event("response.output_item.done", output_index=index, item=item)

    async def _function_call_events(self, item: dict, index: int) -> AsyncIterator[dict]:
        ids = {"item_id": item["id"], "output_index": index}
        yield self.event(
            "response.output_item.added",
            output_index=index,
            item={**item, "arguments": "", "status": "in_progress"},
        )
        yield self.event("response.function_call_arguments.delta", **ids, delta=item["arguments"])
        yield self.event(
            "response.function_call_arguments.done",
            **ids,
            name=item["name"],
            arguments=item["arguments"],
        )
        yield self.event("response.output_item.done", output_index=index, item=item)


async def _text_of(events) -> AsyncIterator[str]:
    async for event in events:
        if event.text:
            yield event.text


async def _once(text: str) -> AsyncIterator[str]:
    yield text
