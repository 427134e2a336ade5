"""The output stage: the engine's text in, typed events out, incrementally.

Stop strings end generation inside the engines (only they can stop decoding at once and count
tokens exactly); this stage finds tool calls in the model family's own syntax. Text that cannot
be part of a call streams at once; a call is held until it is complete, then sent as a start
and its arguments.

Where a grammar left part of a schema unenforced (schemas.py), the finished reply's calls (or its
JSON) are checked against the client's full schema; one that fails ends the generation with an
error instead of its finish: the last event of a stream, or the error status of a whole reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.events import (
    Finished,
    OutputEvent,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
)
from mlxserve.pipeline.markers import partial_marker_length
from mlxserve.pipeline.reasoning import ReasoningSplitter
from mlxserve.pipeline.schemas import OutputChecks
from mlxserve.pipeline.streamed_calls import StreamedCall
from mlxserve.pipeline.tool_parsers import ToolCall, parse_tool_calls

# How a reply that is nothing but a JSON call can begin (after white space).
JSON_CALL_OPENINGS = ("{", "[", "```", "<|python_tag|>")


@dataclass(frozen=True)
class CallSyntax:
    opening: str | None  # the marker that starts a call inside free text
    closing: str | None  # the marker that ends it; None: the call runs to the end of the reply
    whole_reply: bool  # a reply that is only a JSON call is a call too
    json_call_follows: bool = False  # the opening is followed by one JSON call object


SYNTAX = {
    "qwen": CallSyntax("<tool_call>", "</tool_call>", whole_reply=False, json_call_follows=True),
    "mistral": CallSyntax("[TOOL_CALLS]", None, whole_reply=False),
    "gemma": CallSyntax("```tool_code", "```", whole_reply=True),
    "llama3": CallSyntax(None, None, whole_reply=True),
    "json": CallSyntax(None, None, whole_reply=True),
}


class ToolCallScanner:
    """Feed a family's output as it is generated; get back text and tool-call events.

    With `streamed`, calls are grammar-constrained JSON objects, passed on as they are generated
    (Mistral's call lists and Gemma's tool_code blocks are read whole)."""

    def __init__(self, family: str, streamed: bool = False):
        self.family = family
        self.syntax = SYNTAX[family]
        self.streamed = streamed
        self.state = "undecided" if self.syntax.whole_reply else "text"
        self.calls = 0
        self._held = ""
        self._call: StreamedCall | None = None
        self._call_prefix = ""  # the marker a streamed call began with

    def feed(self, text: str) -> list[OutputEvent]:
        self._held += text
        events: list[OutputEvent] = []
        while True:
            before = (self.state, len(self._held))
            if self.state == "undecided":
                self._decide()
            elif self.state == "text":
                events += self._scan_text()
            elif self.state == "streaming":
                events += self._stream_call()
            elif self.state == "closing":
                self._close_call()
            else:
                events += self._scan_call()
            if (self.state, len(self._held)) == before:
                return events

    def finish(self) -> list[OutputEvent]:
        """Whatever is still held, once the reply has ended."""
        held, self._held = self._held, ""
        if self.state in ("streaming", "closing"):
            if self._call.started:
                return []  # already out; a call cut short ends with finish_reason length
            return self._parsed(self._call_prefix + held, self._call_prefix + held)
        if self.state == "undecided":
            return self._parsed(held, held)
        if self.state == "call":
            opening = self.syntax.opening or ""
            if self.syntax.closing is None:
                return self._parsed(opening + held, opening + held)
            return [TextDelta(opening + held)] if held or opening else []
        return [TextDelta(held)] if held else []

    def _decide(self) -> None:
        """Hold the reply while it may still be a whole-reply JSON call."""
        start = self._held.lstrip()
        if not start:
            return
        if self.streamed and start.startswith("{"):
            self._held = start
            self._start_call("")
        elif not any(o.startswith(start[: len(o)]) for o in JSON_CALL_OPENINGS):
            self.state = "text"

    def _scan_text(self) -> list[OutputEvent]:
        opening = self.syntax.opening
        if opening is None:
            text, self._held = self._held, ""
            return [TextDelta(text)] if text else []
        found = self._held.find(opening)
        if found >= 0:
            text = self._held[:found]
            self._held = self._held[found + len(opening) :]
            if self.streamed and self.syntax.json_call_follows:
                self._start_call(opening)
            else:
                self.state = "call"
            return [TextDelta(text)] if text else []
        keep = partial_marker_length(self._held, opening)
        text, self._held = (
            self._held[: len(self._held) - keep],
            self._held[len(self._held) - keep :],
        )
        return [TextDelta(text)] if text else []

    def _scan_call(self) -> list[OutputEvent]:
        closing = self.syntax.closing
        found = self._held.find(closing) if closing else -1
        if found < 0:
            return []
        block = self.syntax.opening + self._held[: found + len(closing)]
        self._held = self._held[found + len(closing) :]
        self.state = "text"
        return self._parsed(block, block)

    def _start_call(self, prefix: str) -> None:
        self._call, self.state, self._call_prefix = StreamedCall(self.calls), "streaming", prefix

    def _stream_call(self) -> list[OutputEvent]:
        events, self._held = self._call.feed(self._held)
        if self._call.started and self.calls == self._call.index:
            self.calls += 1
        if self._call.done:
            self.state = "closing"
        return events

    def _close_call(self) -> None:
        """After a streamed call: skip to its closing marker, or on to the next whole call."""
        closing = self.syntax.closing
        if closing is not None:
            found = self._held.find(closing)
            if found >= 0:
                self._held, self.state = self._held[found + len(closing) :], "text"
            return
        rest = self._held.lstrip()
        if rest.startswith("{"):
            self._held = rest
            self._start_call("")
        elif rest:
            self.state = "text"

    def _parsed(self, source: str, fallback: str) -> list[OutputEvent]:
        """Events for the calls in `source`, or `fallback` as text when it holds none."""
        content, calls = parse_tool_calls(source, self.family)
        if not calls:
            return [TextDelta(fallback)] if fallback else []
        events: list[OutputEvent] = [TextDelta(content)] if content else []
        for call in calls:
            events += self._call_events(call)
        return events

    def _call_events(self, call: ToolCall) -> list[OutputEvent]:
        index, self.calls = self.calls, self.calls + 1
        return [ToolCallStart(index, call.id, call.name), ToolArgumentsDelta(index, call.arguments)]


class OutputStage:
    """One generation's output: engine text in, events out. Reasoning is split off first (with
    a `reasoning` splitter), then tool calls are found in the rest (with a `tool_family`);
    `checks` are what the finished reply is checked against."""

    def __init__(
        self,
        tool_family: str | None,
        constrained: bool = False,
        reasoning: ReasoningSplitter | None = None,
        checks: OutputChecks | None = None,
    ):
        self.scanner = ToolCallScanner(tool_family, constrained) if tool_family else None
        self.reasoning = reasoning
        self.checks = checks or None
        self._text = ""  # the reply's text, kept for a check of its JSON
        self._calls: dict[int, list[str]] = {}  # name and arguments of each call, for checks

    @property
    def thinking(self) -> bool:
        return self.reasoning is not None and self.reasoning.state == "reasoning"

    def feed(self, text: str) -> list[OutputEvent]:
        if not text:
            return []
        if self.reasoning is None:
            return self._kept(self._content(text))
        return self._kept(self._after_reasoning(self.reasoning.feed(text)))

    def _content(self, text: str) -> list[OutputEvent]:
        if self.scanner is None:
            return [TextDelta(text)] if text else []
        return self.scanner.feed(text)

    def _after_reasoning(self, events: list[OutputEvent]) -> list[OutputEvent]:
        out: list[OutputEvent] = []
        for event in events:
            out += self._content(event.text) if isinstance(event, TextDelta) else [event]
        return out

    def finish(self, stats: GenerationStats) -> list[OutputEvent]:
        events = self._after_reasoning(self.reasoning.finish()) if self.reasoning else []
        events += self.scanner.finish() if self.scanner else []
        called = self.scanner is not None and self.scanner.calls > 0
        reason = "tool_calls" if called and stats.finish_reason != "length" else stats.finish_reason
        events = self._kept(events)
        if self.checks is not None and reason != "length":  # a cut reply says so itself
            self._check()
        return [*events, Finished(reason, stats)]

    def _kept(self, events: list[OutputEvent]) -> list[OutputEvent]:
        if self.checks is None:
            return events
        for event in events:
            if isinstance(event, TextDelta):
                self._text += event.text
            elif isinstance(event, ToolCallStart):
                self._calls[event.index] = [event.name, ""]
            elif isinstance(event, ToolArgumentsDelta):
                self._calls[event.index][1] += event.delta
        return events

    def _check(self) -> None:
        """RequestError when the reply fails a schema the grammar did not wholly enforce."""
        reply = self.checks.reply
        if reply is not None and not self._calls:
            problem = reply.problem(_json_or_text(self._text))
            if problem:
                param = self.checks.reply_param
                message = f"the reply does not match the schema of {param} {problem}"
                raise RequestError(500, _unenforced(message), param, "invalid_output")
        for index in sorted(self._calls):
            name, arguments = self._calls[index]
            check = self.checks.tools.get(name)
            problem = check.problem(_json_or_text(arguments)) if check else None
            if problem:
                message = f"the arguments of the call to '{name}' do not match its schema {problem}"
                raise RequestError(500, _unenforced(message), "tools", "invalid_tool_call")


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text  # fails the schema, which names it


def _unenforced(message: str) -> str:
    return (
        f"{message}; that part of the schema is not enforced while sampling (the grammar cannot "
        "express it) and was checked after it"
    )
