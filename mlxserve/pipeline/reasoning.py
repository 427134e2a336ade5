"""Reasoning models' thinking, kept out of the answer: a splitter that reads a reply as it is
generated and tells its reasoning from its content, per model family.

Families, told apart by their chat template:
- "think": Qwen3, DeepSeek-R1 and their distills, `<think>...</think>` before the answer; some
  templates write the opening tag into the prompt themselves, so the reply starts inside it.
- "magistral": Mistral's `[THINK]...[/THINK]`.
- "harmony": gpt-oss, whose analysis channel is the reasoning and final channel the answer.
- "gemma4": Gemma 4's thought channel, `<|channel>thought ... <channel|>`.
Thinking is only recognised at the start of a reply, where these models write it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlxserve.pipeline.events import OutputEvent, ReasoningDelta, TextDelta
from mlxserve.pipeline.markers import partial_marker_length


@dataclass(frozen=True)
class ThinkSyntax:
    opening: str
    closing: str
    answer_prefix: str = ""  # written between the reasoning and the answer, shown to no one
    special_pieces: tuple[str, ...] = ()  # the markers' tokens, which may be special ones


SYNTAX = {
    "think": ThinkSyntax("<think>", "</think>", special_pieces=("<think>", "</think>")),
    "magistral": ThinkSyntax("[THINK]", "[/THINK]", special_pieces=("[THINK]", "[/THINK]")),
    "harmony": ThinkSyntax(
        "<|channel|>analysis<|message|>",
        "<|end|>",
        "<|start|>assistant<|channel|>final<|message|>",
        ("<|channel|>", "<|message|>", "<|end|>", "<|start|>"),
    ),
    "gemma4": ThinkSyntax(
        "<|channel>thought", "<channel|>", special_pieces=("<|channel>", "<channel|>")
    ),
}
# What the chat template of each family contains, checked in this order.
TEMPLATE_MARKS = (
    ("<|channel|>", "harmony"),
    ("<|channel>", "gemma4"),
    ("[THINK]", "magistral"),
    ("<think>", "think"),
)


def reasoning_family(chat_template: str | None) -> str | None:
    for mark, family in TEMPLATE_MARKS:
        if chat_template and mark in chat_template:
            return family
    return None


def opened_in_prompt(family: str, prompt: str) -> bool:
    """Whether the template ended the prompt inside a think block (the reply then starts there)."""
    return prompt.rstrip().endswith(SYNTAX[family].opening)


class ReasoningSplitter:
    """Feed a reply's text; get back ReasoningDelta and TextDelta events."""

    def __init__(self, family: str, opened: bool = False):
        self.syntax = SYNTAX[family]
        self.state = "reasoning" if opened else "start"
        self._held = ""

    def feed(self, text: str) -> list[OutputEvent]:
        self._held += text
        if self.state == "start":
            self._read_start()
        if self.state == "reasoning":
            return self._read_reasoning()
        if self.state == "answer_prefix":
            self._skip_answer_prefix()
        if self.state == "content":
            text, self._held = self._held, ""
            return [TextDelta(text)] if text else []
        return []

    def finish(self) -> list[OutputEvent]:
        held, self._held = self._held, ""
        if self.state == "answer_prefix":
            held = held.strip()  # the space after the reasoning, with no answer following
        if not held:
            return []
        return [ReasoningDelta(held)] if self.state == "reasoning" else [TextDelta(held)]

    def _read_start(self) -> None:
        start = self._held.lstrip()
        opening = self.syntax.opening
        if start.startswith(opening):
            self._held, self.state = start[len(opening) :], "reasoning"
        elif start and not opening.startswith(start[: len(opening)]):
            self.state = "content"

    def _read_reasoning(self) -> list[OutputEvent]:
        closing = self.syntax.closing
        found = self._held.find(closing)
        if found < 0:
            keep = partial_marker_length(self._held, closing)
            thought, self._held = (
                self._held[: len(self._held) - keep],
                self._held[-keep:] if keep else "",
            )
            return [ReasoningDelta(thought)] if thought else []
        thought, rest = self._held[:found], self._held[found + len(closing) :]
        self._held, self.state = rest, "answer_prefix"
        events: list[OutputEvent] = [ReasoningDelta(thought)] if thought else []
        return events + self.feed("")

    def _skip_answer_prefix(self) -> None:
        """Drop the white space (and a family's channel header) between reasoning and answer."""
        rest = self._held.lstrip()
        prefix = self.syntax.answer_prefix
        if not rest:
            return  # only white space so far: the answer has not begun
        if rest.startswith(prefix):
            self._held, self.state = rest[len(prefix) :].lstrip(), "content"
        elif rest and not prefix.startswith(rest[: len(prefix)]):
            self._held, self.state = rest, "content"
