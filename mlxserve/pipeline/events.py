"""Typed output events: what the output stage emits and every API adapter renders. A
non-streamed answer is the same events folded into one Completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

from mlxserve.engine.base import GenerationStats, TokenLogprob
from mlxserve.families.calls import ToolCall


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens behind it, when asked for


@dataclass(frozen=True)
class ReasoningDelta:
    text: str  # thinking, kept apart from the answer


@dataclass(frozen=True)
class ToolCallStart:
    index: int  # position among this reply's calls
    id: str
    name: str


@dataclass(frozen=True)
class ToolArgumentsDelta:
    index: int
    delta: str  # the next piece of the call's JSON arguments


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | tool_calls
    stats: GenerationStats


OutputEvent = TextDelta | ReasoningDelta | ToolCallStart | ToolArgumentsDelta | Finished


@dataclass
class Completion:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    stats: GenerationStats | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def content(self) -> str:
        """The text beside tool calls, trimmed; the text as generated when there are none."""
        return self.text.strip() if self.tool_calls else self.text

    def add(self, event: OutputEvent) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
            self.logprobs += event.logprobs
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ToolCallStart):
            self.tool_calls.append(ToolCall(event.name, "", event.id))
        elif isinstance(event, ToolArgumentsDelta):
            self.tool_calls[event.index].arguments += event.delta
        else:
            self.finish_reason, self.stats = event.finish_reason, event.stats


class LogprobsOfText:
    """Gives each token's log-probabilities to the text it became: tokens whose text is held
    back wait for it, and those of reasoning or of tool calls are not the answer's, so dropped."""

    def __init__(self):
        self.pending: list[TokenLogprob] = []

    def attach(self, outputs: list[OutputEvent], logprobs: list[TokenLogprob]) -> list:
        self.pending += logprobs
        for index, output in enumerate(outputs):
            if isinstance(output, TextDelta):
                outputs[index] = TextDelta(output.text, (*output.logprobs, *self.pending))
                self.pending = []
                return outputs
        if outputs:
            self.pending = []
        return outputs


async def fold(events: AsyncIterator[OutputEvent]) -> Completion:
    completion = Completion()
    async with aclosing(events):
        async for event in events:
            completion.add(event)
    return completion
