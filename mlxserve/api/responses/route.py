"""POST /v1/responses, the endpoint Codex uses: input items parsed into the neutral request, and
the output events rendered as OpenAI's documented event sequence. A non-streamed response is the
last event's response, so both carry the same output. With remote MCP tools the response holds
every round of the tool loop (mcp/loop.py), rendered by mcp_stream.py."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Blueprint, jsonify, request

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.http.sse import sse_response
from mlxserve.api.responses.answers import (
    ResponseCustomToolCallItem,
    ResponseFunctionCallItem,
    ResponseMessageItem,
    ResponseObject,
    ResponseOutputItem,
    ResponseReasoningItem,
)
from mlxserve.api.responses.custom import StreamedInput, input_mismatch
from mlxserve.api.responses.items import (
    custom_tool_call_item,
    function_call_item,
    message_item,
    output_text,
    reasoning_item,
    summary_text,
)
from mlxserve.api.responses.mcp import listed_labels, response_loop
from mlxserve.api.responses.mcp_stream import McpItems
from mlxserve.api.responses.protocol import (
    ResponsesRequest,
    input_turns,
    new_response_id,
    output_turns,
    response_object,
)
from mlxserve.api.responses.tools import Tool
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.api.shared.item_stream import CALL, REASONING, TEXT, ItemStream
from mlxserve.api.shared.logprobs import content_logprobs
from mlxserve.api.shared.protocol import template_effort
from mlxserve.api.state import server_state
from mlxserve.mcp.loop import LoopEvent, McpCallFinished, McpCallStarted
from mlxserve.mcp.tools import McpToolbox
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.events import Finished, OutputEvent, ToolCallStart
from mlxserve.pipeline.request import GenerateRequest, TextPart, Turn

log = logging.getLogger(__name__)
blueprint = Blueprint("openai_responses", __name__, url_prefix="/v1")
Closed = tuple[list[dict], ResponseOutputItem]  # an item's last events, and the item as it ends


@blueprint.post("/responses")
@answers(ResponseObject)
@with_body(ResponsesRequest)
async def create_response(body: ResponsesRequest):
    """OpenAI's Responses API: a response object, or its event stream."""
    state = server_state()
    store = state.response_store
    history = store.conversation(body.previous_response_id) if body.previous_response_id else []
    conversation = history + input_turns(body, store)
    if not conversation:
        raise RequestError(
            400, "input: must hold at least one item", "input", "missing_required_parameter"
        )
    system = [Turn("system", [TextPart(body.instructions)])] if body.instructions else []
    response_id = new_response_id()
    items = body.input if isinstance(body.input, list) else []

    def neutral(toolbox: McpToolbox | None) -> GenerateRequest:
        return GenerateRequest(
            model=body.model,
            sampling=body.to_sampling_params(),
            conversation=system + conversation,
            max_tokens=body.max_output_tokens,
            constraints=body.constraints(toolbox),
            prompt_param="input",
            reasoning_effort=template_effort(body.reasoning and body.reasoning.effort),
            top_logprobs=body.requested_logprobs,
            response_id=response_id,
            endpoint=request.path,
        )

    loop = await response_loop(state, body.toolset, items, neutral, body.max_tool_calls)
    toolbox = loop.toolbox
    listed = store.listed(body.previous_response_id) | listed_labels(items)
    turn = ResponseTurn(
        body, response_id, loop.prepared.model, conversation, store, toolbox, listed
    )
    events = turn.events(loop.events())
    if body.stream:
        return await sse_response(events, done_marker=False, named_events=True)
    final = [event async for event in events][-1]
    return jsonify(final["response"])


class ResponseTurn(ItemStream):
    """One response being produced: its output items, and the events that describe them."""

    def __init__(
        self,
        body: ResponsesRequest,
        response_id: str,
        model: str,
        conversation: list[Turn],
        store: ConversationStore,
        toolbox: McpToolbox | None = None,
        listed: frozenset[str] = frozenset(),  # MCP servers the conversation listed already
    ):
        self.body, self.id, self.model = body, response_id, model
        self.conversation, self.store = conversation, store
        self.toolbox, self.listed = toolbox, listed
        self.output: list[ResponseOutputItem] = []  # finished, and MCP calls waiting for a result
        self._open: ResponseOutputItem | None = None  # the item being generated
        self._text = ""  # the open message's or reasoning's text so far
        self._logprobs: list = []  # the open message's tokens', when `include` asks for them
        self._custom: tuple[Tool, StreamedInput] | None = None  # the open custom call's input
        self._sequence = itertools.count()
        self.mcp = McpItems(self.output, self.event)

    def event(self, kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(self._sequence), **fields}

    async def events(self, outputs: AsyncIterator[LoopEvent]) -> AsyncIterator[dict]:
        started = response_object(self.body, self.id, self.model, [], None).as_dict()
        yield self.event("response.created", response=started)
        yield self.event("response.in_progress", response=started)
        for event in self.mcp.listings(self.toolbox, self.listed):
            yield event
        async with aclosing(outputs):
            async for output in outputs:
                for event in self.render(output):
                    yield event

    def render(self, output: LoopEvent) -> list[dict]:
        if isinstance(output, McpCallStarted):
            return self.close() + self.mcp.started(output)
        if isinstance(output, McpCallFinished):
            return self.mcp.finished(output)
        return self.render_output(output)

    def open(self, kind: str, output: OutputEvent) -> list[dict]:
        if kind == TEXT:
            return self._open_message()
        return self._open_reasoning() if kind == REASONING else self._open_call(output)

    def extend(self, kind: str, output: OutputEvent) -> list[dict]:
        if kind == CALL:
            return self._arguments(output.delta)
        self._text += output.text
        if kind == TEXT:
            logprobs = content_logprobs(output.logprobs)
            self._logprobs += logprobs
            return [self._text_event("delta", delta=output.text, logprobs=logprobs)]
        return self._reasoning_deltas(output.text)

    @property
    def _kind(self) -> str | None:
        return self._open.type if self._open else None

    @property
    def _ids(self) -> dict:
        return {"item_id": self._open.id, "output_index": len(self.output)}

    def _added(self, item: ResponseOutputItem) -> dict:
        index = len(self.output)
        return self.event("response.output_item.added", output_index=index, item=item.as_dict())

    def _open_message(self) -> list[dict]:
        self._open = message_item("", f"msg_{uuid.uuid4().hex[:24]}", status="in_progress")
        self._text, self._logprobs = "", []
        part = output_text("").as_dict()
        return [self._added(self._open), self._text_event("content_part.added", part=part)]

    def _open_reasoning(self) -> list[dict]:
        body = self.body
        self._open = reasoning_item(
            "", f"rs_{uuid.uuid4().hex[:24]}", body.summarized, body.sealed_reasoning
        )
        self._text = ""
        if not body.summarized:
            return [self._added(self._open)]
        part = summary_text("").as_dict()
        return [self._added(self._open), self._summary_event("part.added", part=part)]

    def _reasoning_deltas(self, text: str) -> list[dict]:
        events = [
            self.event("response.reasoning_text.delta", **self._ids, content_index=0, delta=text)
        ]
        if self.body.summarized:
            events.append(self._summary_event("text.delta", delta=text))
        return events

    def _summary_event(self, kind: str, **fields) -> dict:
        """An event of the reasoning's summary, which is the whole reasoning (one part)."""
        return self.event(
            f"response.reasoning_summary_{kind}", **self._ids, summary_index=0, **fields
        )

    def _open_call(self, start: ToolCallStart) -> list[dict]:
        mcp_tool = self.toolbox and self.toolbox.get(start.name)
        if mcp_tool is not None:
            self._open, events = self.mcp.open_call(start, mcp_tool)
            return events
        tool = self.body.toolset.get(start.name)
        if tool is not None and tool.kind == "custom":
            self._custom = (tool, StreamedInput())
            item = custom_tool_call_item(start.id, tool.name, "", tool.namespace)
        elif tool is not None:
            item = function_call_item(start.id, tool.name, "", "in_progress", tool.namespace)
        else:
            item = function_call_item(start.id, start.name, "", "in_progress")
        self._open = item
        return [self._added(item)]

    def _arguments(self, delta: str) -> list[dict]:
        if self._kind in ("mcp_call", "mcp_approval_request"):
            return self.mcp.arguments(self._open, delta)
        if self._custom is None:
            self._open.arguments += delta
            return [self.event("response.function_call_arguments.delta", **self._ids, delta=delta)]
        text = self._custom[1].feed(delta)
        if not text:
            return []
        return [self.event("response.custom_tool_call_input.delta", **self._ids, delta=text)]

    def _text_event(self, kind: str, logprobs: list = (), **fields) -> dict:
        if kind in ("delta", "done"):
            logprobs = [entry.as_dict() for entry in logprobs]
            return self.event(
                f"response.output_text.{kind}",
                **self._ids,
                content_index=0,
                **fields,
                logprobs=logprobs,
            )
        return self.event(f"response.{kind}", **self._ids, content_index=0, **fields)

    def closing(self, kind: str) -> list[dict]:
        """The events that complete the open item, which then joins the output."""
        if self._kind in ("mcp_call", "mcp_approval_request"):
            events, self._open = self.mcp.close(self._open), None
            return events
        closing = {
            "reasoning": self._close_reasoning,
            "message": self._close_message,
            "custom_tool_call": self._close_custom_call,
        }.get(self._kind, self._close_function_call)
        events, item = closing(self._open)
        index = len(self.output)
        events.append(
            self.event("response.output_item.done", output_index=index, item=item.as_dict())
        )
        self.output.append(item)
        self._open = None
        return events

    def _close_reasoning(self, item: ResponseReasoningItem) -> Closed:
        text, body = self._text, self.body
        events = [
            self.event("response.reasoning_text.done", **self._ids, content_index=0, text=text)
        ]
        if body.summarized:
            events.append(self._summary_event("text.done", text=text))
            events.append(self._summary_event("part.done", part=summary_text(text).as_dict()))
        return events, reasoning_item(text, item.id, body.summarized, body.sealed_reasoning)

    def _close_message(self, item: ResponseMessageItem) -> Closed:
        text, logprobs = self._text, self._logprobs
        events = [
            self._text_event("done", text=text, logprobs=logprobs),
            self._text_event("content_part.done", part=output_text(text, logprobs).as_dict()),
        ]
        return events, message_item(text, item.id, logprobs=logprobs)

    def _close_custom_call(self, item: ResponseCustomToolCallItem) -> Closed:
        (tool, streamed), self._custom = self._custom, None
        text = streamed.finish()
        mismatch = input_mismatch(tool.definition, text)
        if mismatch:  # sent anyway: the client's tool reports what is wrong to the model
            log.warning(
                "custom tool '%s': input does not match its grammar: %s", tool.flat_name, mismatch
            )
        done = self.event("response.custom_tool_call_input.done", **self._ids, input=text)
        return [done], item.model_copy(update={"input": text})

    def _close_function_call(self, item: ResponseFunctionCallItem) -> Closed:
        done = self.event(
            "response.function_call_arguments.done",
            **self._ids,
            name=item.name,
            arguments=item.arguments,
        )
        return [done], item.model_copy(update={"status": "completed"})

    def finish(self, finished: Finished) -> list[dict]:
        events = self.mcp.unmade()
        if all(item.type in ("reasoning", "mcp_list_tools") for item in self.output):
            # a reply with no answer still has one (empty) message
            events += self._open_message()
            self.open_kind = TEXT
            events += self.close()
        stats = finished.stats
        response = response_object(self.body, self.id, self.model, self.output, stats).as_dict()
        if self.body.store:
            items = self.body.input if isinstance(self.body.input, list) else []
            turns = self.conversation + output_turns(response)
            listed = self.listed | {
                i.server_label for i in self.output if i.type == "mcp_list_tools"
            }
            self.store.put(self.id, turns, [*items, *response["output"]], listed)
        return events + [self.event("response.completed", response=response)]
