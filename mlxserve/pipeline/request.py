"""The protocol-neutral request every API family's adapter produces: a conversation of typed
turns (or a raw prompt), sampling, constraints and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxserve.engine.base import Speculation
from mlxserve.sampling.params import SamplingParams


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    url: str  # a data: URL or a remote one, as the client sent it


@dataclass(frozen=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # a JSON object, as OpenAI sends it


@dataclass(frozen=True)
class ToolResultPart:
    call_id: str
    content: str


@dataclass(frozen=True)
class ReasoningPart:
    """An assistant's earlier thinking, which the chat template shows or drops."""

    text: str


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart


@dataclass
class Turn:
    role: str  # system | user | assistant | tool
    parts: list[Part] = field(default_factory=list)
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(
            part.text if isinstance(part, TextPart) else part.content
            for part in self.parts
            if isinstance(part, (TextPart, ToolResultPart))
        )

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [part for part in self.parts if isinstance(part, ToolCallPart)]

    @property
    def reasoning(self) -> str:
        return "".join(part.text for part in self.parts if isinstance(part, ReasoningPart))

    @property
    def has_images(self) -> bool:
        return any(isinstance(part, ImagePart) for part in self.parts)


@dataclass
class Constraints:
    """What the output must look like. `tools` are function tools in the chat completions shape
    ({"type": "function", "function": {...}}), which chat templates expect."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none | required
    forced_tool: str | None = None  # the one function the reply must call
    parallel_tool_calls: bool = True
    json_schema: dict[str, Any] | None = None  # the reply is JSON matching this schema
    schema_param: str = "response_format"  # the field json_schema came from, for errors

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def must_call(self) -> bool:
        return self.wants_tools and (self.tool_choice == "required" or bool(self.forced_tool))


@dataclass(frozen=True)
class FillInMiddle:
    """Code around an editor's cursor: the model writes what goes between `prefix` and `suffix`,
    going on from `middle`, the part of the gap already typed."""

    prefix: str
    suffix: str
    middle: str = ""
    param: str = "suffix"  # the field a model without fill-in-the-middle tokens is blamed on


@dataclass
class GenerateRequest:
    """What an API adapter makes of its client's request; prepare.py turns it into the engine's
    EngineRequest."""

    model: str
    sampling: SamplingParams
    conversation: list[Turn] | None = None  # a chat; or else a raw `prompt`, or `fill_in`
    prompt: str | list[int] | None = None
    fill_in: FillInMiddle | None = None  # rendered in the model's own fill-in-the-middle tokens
    max_tokens: int | None = None  # None: until the context is full
    # none | minimal | low | medium | high: passed to thinking models' chat templates (their
    # enable_thinking and reasoning_effort switches); None leaves the template's default.
    reasoning_effort: str | None = None
    clamp_max_tokens: bool = False  # a max_tokens beyond the context is cut to fit, not refused
    top_logprobs: int | None = None  # each token's log-probability and its likeliest rivals
    echo: bool = False  # the reply starts with the prompt (with its tokens' log-probabilities)
    stop: list[str] = field(default_factory=list)
    constraints: Constraints = field(default_factory=Constraints)
    ttl: int | None = None  # idle seconds for a model this request loads
    speculation: Speculation = field(default_factory=Speculation)  # draft_path set by prepare
    prompt_param: str = "messages"  # the field an over-long prompt is blamed on
    response_id: str = ""  # the adapter's id for its response; names the generation in logs
    endpoint: str = ""  # the path it came in on, for the request log
