"""What the item-based renderers share (Anthropic's content blocks, the Responses API's output
items, /api/v1's output items): an answer is a run of items (text, reasoning, a tool call),
each opened by the first output event of its kind, continued by the events after it, and
closed when an event of another kind (or another call) comes, or the reply ends. Each renderer
says what opening, continuing and closing an item mean in its family's events."""

from __future__ import annotations

import abc

from mlxserve.pipeline.events import (
    Finished,
    OutputEvent,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
)

TEXT, REASONING, CALL = "text", "reasoning", "call"
KINDS = {TextDelta: TEXT, ReasoningDelta: REASONING, ToolCallStart: CALL}


class ItemStream(abc.ABC):
    open_kind: str | None = None  # the kind of the item being written, if one is

    def render_output(self, output: OutputEvent) -> list[dict]:
        """The family's events for one output event."""
        if isinstance(output, Finished):
            return self.close() + self.finish(output)
        if isinstance(output, ToolArgumentsDelta):
            return self.extend(CALL, output)
        kind = KINDS[type(output)]
        events = []
        if kind == CALL or kind != self.open_kind:  # every call is an item of its own
            events = self.close() + self.open(kind, output)
            self.open_kind = kind
        return events if kind == CALL else events + self.extend(kind, output)

    def close(self) -> list[dict]:
        """The events that complete the open item, if there is one."""
        if self.open_kind is None:
            return []
        kind, self.open_kind = self.open_kind, None
        return self.closing(kind)

    @abc.abstractmethod
    def open(self, kind: str, output: OutputEvent) -> list[dict]:
        """Start an item of `kind` (for a call, `output` is its ToolCallStart)."""

    @abc.abstractmethod
    def extend(self, kind: str, output: OutputEvent) -> list[dict]:
        """Add a text, reasoning or call-arguments delta to the open item."""

    @abc.abstractmethod
    def closing(self, kind: str) -> list[dict]:
        """Complete the open item of `kind`."""

    @abc.abstractmethod
    def finish(self, finished: Finished) -> list[dict]:
        """The reply's last events, every item closed."""
