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
import re
import uuid

from mlxserve.engine.base import GenerationStats
from mlxserve.families.syntax import ToolSyntax
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

# How a reply that is nothing but calls can begin (after white space).
CALL_OPENINGS = ("{", "[", "```", "<|python_tag|>")


class ToolCallScanner:
    """Feed a family's output as it is generated; get back text and tool-call events.

    A call block is held until it is complete, then read by the family's parser; its first
    call's name is sent as soon as it is known. With `streamed`, calls are grammar-constrained
    and a JSON call object (Qwen's, and the whole-reply JSON families') is passed on as it is
    generated."""

    def __init__(self, syntax: ToolSyntax, tools: list[dict] | None = None, streamed=False):
        self.syntax = syntax
        self.tools = tools or []
        self.streamed = streamed
        self.state = "undecided" if syntax.whole_reply else "text"
        self.calls = 0
        self._held = ""
        self._announced: ToolCallStart | None = None  # the block's first call, sent early
        self._call: StreamedCall | None = None
        # Qwen's blocks each hold one JSON call object, which can stream as generated.
        self._streams_json = (
            syntax.shape == "json_object" and syntax.block == "per_call" and not syntax.whole_reply
        )

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
                events += self._scan_block()
            if (self.state, len(self._held)) == before:
                return events

    def finish(self) -> list[OutputEvent]:
        """Whatever is still held, once the reply has ended."""
        held, self._held = self._held, ""
        if self.state in ("streaming", "closing"):
            # Under the grammar all that follows is the call, or the next one: a call cut short
            # ends with finish_reason length, and its pieces are no text.
            return []
        if self.state == "undecided":
            return self._parsed(held, held, self.syntax.reply_parse)
        if self.state == "block" and self.streamed and self.syntax.streams_arguments:
            return []  # its calls are out; one cut short ends with finish_reason length
        if self.state == "block":  # a block the reply's end closes (Mistral's, harmony's)
            return self._parsed(held, self.syntax.opening + held, self.syntax.parse)
        return [TextDelta(held)] if held else []

    def _decide(self) -> None:
        """Hold the reply while it may still be nothing but calls."""
        start = self._held.lstrip()
        if not start:
            return
        if self.streamed and start.startswith("{") and self.syntax.shape == "json_object":
            self._held = start
            self._start_call()
        elif not any(o.startswith(start[: len(o)]) for o in CALL_OPENINGS):
            self.state = "text"

    def _scan_text(self) -> list[OutputEvent]:
        opening = self.syntax.opening
        if opening is None:
            text, self._held = self._held, ""
            return [TextDelta(text)] if text else []
        found = self._held.find(opening)
        if found >= 0:
            text = self._without_ignored(self._held[:found])
            self._held = self._held[found + len(opening) :]
            if self.streamed and self._streams_json:
                self._start_call()
            else:
                self.state, self._announced = "block", None
            return [TextDelta(text)] if text else []
        ignored = self.syntax.ignored + opening
        keep = max(partial_marker_length(self._held, m) for m in (opening, ignored))
        cut = len(self._held) - keep
        text, self._held = self._held[:cut], self._held[cut:]
        return [TextDelta(text)] if text else []

    def _without_ignored(self, text: str) -> str:
        ignored = self.syntax.ignored
        return text[: -len(ignored)] if ignored and text.endswith(ignored) else text

    def _scan_block(self) -> list[OutputEvent]:
        if self.streamed and self.syntax.streams_arguments:
            return self._stream_block()
        closing = self.syntax.closing
        found = self._held.find(closing) if closing else -1
        if found < 0:
            return self._announce()
        inside = self._held[:found]
        self._held, self.state = self._held[found + len(closing) :], "text"
        return self._parsed(inside, self.syntax.opening + inside + closing, self.syntax.parse)

    def _stream_block(self) -> list[OutputEvent]:
        """Under the grammar: each call of the block named as soon as its name is complete,
        then its JSON arguments passed on as they are generated."""
        if self._call is not None and not self._call.done:
            events, self._held = self._call.feed(self._held)
            return events
        closing = self.syntax.closing
        end = self._held.find(closing) if closing else -1
        found = re.search(self.syntax.name_pattern, self._held)
        if found and (end < 0 or found.start() < end):
            self._call, self._held = StreamedCall(self.calls, True), self._held[found.end() :]
            self.calls += 1
            name = found.group(1)
            return [ToolCallStart(self._call.index, f"call_{uuid.uuid4().hex[:24]}", name)]
        if end >= 0:
            self._held, self.state = self._held[end + len(closing) :], "text"
        return []

    def _announce(self) -> list[OutputEvent]:
        """The block's first call, as soon as its name is complete."""
        if self._announced is not None:
            return []
        name = self.syntax.name_in(self._held)
        if name is None:
            return []
        self._announced = ToolCallStart(self.calls, f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls += 1
        return [self._announced]

    def _start_call(self) -> None:
        self._call, self.state = StreamedCall(self.calls), "streaming"

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
        if closing is not None and not self.syntax.whole_reply:
            found = self._held.find(closing)
            if found >= 0:
                self._held, self.state = self._held[found + len(closing) :], "text"
            return
        rest = self._held.lstrip()
        if rest.startswith("{"):
            self._held = rest
            self._start_call()
        elif rest:
            self.state = "text"

    def _parsed(self, source: str, fallback: str, parse) -> list[OutputEvent]:
        """Events for the calls in `source`, or `fallback` as text when it holds none."""
        calls = parse(source, self.tools)
        announced, self._announced = self._announced, None
        if not calls:
            if announced is not None:
                return []  # its start is out: a call cut short ends with finish_reason length
            return [TextDelta(fallback)] if fallback else []
        events: list[OutputEvent] = []
        for call in calls:
            if announced is not None:
                events.append(ToolArgumentsDelta(announced.index, call.arguments))
                announced = None
                continue
            index, self.calls = self.calls, self.calls + 1
            events += [ToolCallStart(index, call.id, call.name)]
            events.append(ToolArgumentsDelta(index, call.arguments))
        return events


class OutputStage:
    """One generation's output: engine text in, events out. Reasoning is split off first (with
    a `reasoning` splitter), then tool calls are found in the rest (in a `tool_syntax`, among
    `tools`); `checks` are what the finished reply is checked against."""

    def __init__(
        self,
        tool_syntax: ToolSyntax | None,
        constrained: bool = False,
        reasoning: ReasoningSplitter | None = None,
        checks: OutputChecks | None = None,
        tools: list[dict] | None = None,
    ):
        self.scanner = ToolCallScanner(tool_syntax, tools, constrained) if tool_syntax else None
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
    return f"{message} (the reply was checked against the whole schema after sampling)"
