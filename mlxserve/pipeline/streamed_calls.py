"""A tool call streamed while it is generated. Under a grammar the call's JSON has a known
layout (`{"name": "...", "arguments": {...}}`, compact separators, name first), so its name is
known as soon as it is complete and its arguments can be passed on as they arrive."""

from __future__ import annotations

import json
import re
import uuid

from mlxserve.pipeline.events import OutputEvent, ToolArgumentsDelta, ToolCallStart

CALL_HEAD = re.compile(r'\s*\{"name": "((?:[^"\\]|\\.)*)", "(?:arguments|parameters)": ')


class StreamedCall:
    """A call object (`{"name": ..., "arguments": {...}}`), or with `arguments_only` just the
    arguments object of a call whose name came before it (Kimi's, DeepSeek's, harmony's...)."""

    def __init__(self, index: int, arguments_only: bool = False):
        self.index = index
        self.started = arguments_only
        self.done = False
        self._depth = 0 if arguments_only else 1  # 1: inside the call object itself
        self._closing_brace = 1 if arguments_only else 0  # the arguments' own is theirs
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> tuple[list[OutputEvent], str]:
        """Events for `text`, and what follows the call's closing brace (or all of `text`
        while the head is incomplete)."""
        events: list[OutputEvent] = []
        if not self.started:
            head = CALL_HEAD.match(text)
            if head is None:
                return [], text
            name = json.loads(f'"{head.group(1)}"')
            events.append(ToolCallStart(self.index, f"call_{uuid.uuid4().hex[:24]}", name))
            text, self.started = text[head.end() :], True
        end = self._end_of_call(text)
        if end is None:
            arguments, rest = text, ""
        else:
            arguments, rest = text[: end + self._closing_brace], text[end + 1 :]
        self.done = end is not None
        if arguments:
            events.append(ToolArgumentsDelta(self.index, arguments))
        return events, rest

    def _end_of_call(self, text: str) -> int | None:
        """Where the call object's own closing brace is in `text`, if it is there."""
        for position, char in enumerate(text):
            if self._escaped:
                self._escaped = False
            elif self._in_string:
                self._escaped = char == "\\"
                self._in_string = char != '"'
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return position
        return None
