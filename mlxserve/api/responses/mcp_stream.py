"""The MCP items of one response as OpenAI streams them: `mcp_list_tools` items first
(`response.mcp_list_tools.in_progress`/`.completed`), each `mcp_call` as it is generated
(`response.mcp_call.in_progress`, `response.mcp_call_arguments.delta`/`.done`) and then run
(`response.mcp_call.completed`/`.failed`, and only then `response.output_item.done`), and each
`mcp_approval_request` as a plain item."""

from __future__ import annotations

from collections.abc import Callable

from mlxserve.api.responses.answers import (
    ResponseMcpApprovalRequestItem,
    ResponseMcpCallItem,
    ResponseOutputItem,
)
from mlxserve.api.responses.mcp import (
    approval_request_item,
    finished_call_item,
    list_tools_item,
    mcp_call_item,
)
from mlxserve.families.calls import ToolCall
from mlxserve.mcp.loop import McpCallFinished, McpCallStarted
from mlxserve.mcp.tools import McpTool, McpToolbox
from mlxserve.pipeline.events import ToolCallStart

# The items a call the model writes opens
McpItem = ResponseMcpCallItem | ResponseMcpApprovalRequestItem


class McpItems:
    """Renders one response's MCP items into its output; `event` numbers the events."""

    def __init__(self, output: list[ResponseOutputItem], event: Callable[..., dict]):
        self.output, self.event = output, event
        self.waiting: dict[str, int] = {}  # call id -> output index of its mcp_call item
        self.writing: str | None = None  # the call id of the open mcp_call item (not sent)

    def listings(self, toolbox: McpToolbox | None, already: frozenset[str]) -> list[dict]:
        """An mcp_list_tools item for each server whose tools the conversation has not shown."""
        events = []
        for listing in toolbox.listings if toolbox is not None else ():
            if listing.server_label in already:
                continue
            item = list_tools_item(listing.server_label, [])
            ids = self._ids(item, len(self.output))
            events.append(self._added(item))
            events.append(self.event("response.mcp_list_tools.in_progress", **ids))
            item.tools = [tool.listing() for tool in listing.tools]
            events.append(self.event("response.mcp_list_tools.completed", **ids))
            events.append(self._done(item))
            self.output.append(item)
        return events

    def open_call(self, start: ToolCallStart, tool: McpTool) -> tuple[McpItem, list[dict]]:
        """The item a call the model starts opens: an approval request, or an mcp_call."""
        if tool.needs_approval:
            item = approval_request_item(tool.server_label, tool.name, "")
            return item, [self._added(item)]
        item = mcp_call_item(ToolCall(start.name, "", start.id), tool.server_label, None)
        self.writing = start.id
        return item, [self._added(item), self._progress("in_progress", item)]

    def arguments(self, item: McpItem, delta: str) -> list[dict]:
        item.arguments += delta
        if item.type != "mcp_call":
            return []  # an approval request shows its arguments whole, once done
        ids = self._ids(item, len(self.output))
        return [self.event("response.mcp_call_arguments.delta", **ids, delta=delta)]

    def close(self, item: McpItem) -> list[dict]:
        """The model finished writing the call: an approval request is done; an mcp_call waits
        in the output for its result."""
        index = len(self.output)
        self.output.append(item)
        if item.type != "mcp_call":
            return [self._done(item, index)]
        self.waiting[self.writing] = index
        self.writing = None
        ids = self._ids(item, index)
        return [self.event("response.mcp_call_arguments.done", **ids, arguments=item.arguments)]

    def started(self, started: McpCallStarted) -> list[dict]:
        """A call that runs now; one approved earlier appears here for the first time."""
        if started.call.id in self.waiting:
            return []
        call = started.call
        empty = ToolCall(call.name, "", call.id)  # the arguments follow as one delta
        item = mcp_call_item(empty, started.tool.server_label, started.approval_request_id)
        events = [self._added(item), self._progress("in_progress", item)]
        self.writing = call.id
        events += self.arguments(item, call.arguments)
        return events + self.close(item)

    def finished(self, finished: McpCallFinished) -> list[dict]:
        index = self.waiting.pop(finished.call.id)
        item = finished_call_item(self.output[index], finished.outcome)
        self.output[index] = item
        ending = "failed" if finished.outcome.error else "completed"
        return [self._progress(ending, item, index), self._done(item, index)]

    def unmade(self) -> list[dict]:
        """Calls the loop did not make (the reply was cut, or a limit reached) end incomplete."""
        events = []
        for index in self.waiting.values():
            self.output[index] = self.output[index].model_copy(update={"status": "incomplete"})
            events.append(self._done(self.output[index], index))
        self.waiting.clear()
        return events

    def _ids(self, item: ResponseOutputItem, index: int) -> dict:
        return {"item_id": item.id, "output_index": index}

    def _progress(self, stage: str, item: ResponseMcpCallItem, index: int | None = None) -> dict:
        index = len(self.output) if index is None else index
        return self.event(f"response.mcp_call.{stage}", **self._ids(item, index))

    def _added(self, item: ResponseOutputItem) -> dict:
        index = len(self.output)
        return self.event("response.output_item.added", output_index=index, item=item.as_dict())

    def _done(self, item: ResponseOutputItem, index: int | None = None) -> dict:
        index = len(self.output) if index is None else index
        return self.event("response.output_item.done", output_index=index, item=item.as_dict())
