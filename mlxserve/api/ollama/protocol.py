"""Ollama's request bodies as pydantic models, fields as Ollama's API reference names them, and
their conversion into the pipeline's neutral request: `options` into sampling and limits,
`format` into a schema constraint, `think` into a reasoning effort, `keep_alive` into seconds.
Unknown fields and options are accepted and logged, never rejected."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from mlxserve.api.shared.protocol import (
    MinP,
    OpenAIModel,
    RepeatPenalty,
    Temperature,
    TopK,
    TopP,
    checked_function_tools,
    sampling_params,
)
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints
from mlxserve.sampling.params import SamplingParams

# Go's duration units, as Ollama's keep_alive takes them ("5m", "1h30m", "250ms")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
# `think` as the effort chat templates take: true is the model's usual thinking
THINK_EFFORT = {True: "medium", False: "none", "low": "low", "medium": "medium", "high": "high"}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Seconds to keep the model loaded after the request: None when not given, -1 for ever
    (any negative value), 0 to unload at once. Strings are seconds or Go durations."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else max(float(value), -1.0)
    text = value.strip()
    if NUMBER.fullmatch(text):
        return max(float(text), -1.0)
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
    if not body or "".join(m.group(0) for m in DURATION.finditer(body)) != body:
        raise ValueError(f"must be seconds or a duration such as '5m' or '1h30m', got {value!r}")
    seconds = sum(float(n) * DURATION_UNITS[unit] for n, unit in DURATION.findall(body))
    return max(sign * seconds, -1.0)


class Options(OpenAIModel):
    """The model options Ollama's requests carry; those that only tune Ollama's own runner
    (num_gpu, num_thread, use_mmap...) are accepted and ignored."""

    num_ctx: int | None = Field(None, ge=1)
    num_predict: int | None = None  # -1: no limit; -2: until the context is full
    temperature: Temperature = None
    top_k: TopK = None
    top_p: TopP = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    repeat_last_n: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: list[str] | None = None

    @field_validator("num_predict")
    @classmethod
    def _predict_limit(cls, value: int | None) -> int | None:
        if value is not None and value not in (-1, -2) and value < 1:
            raise ValueError("must be -1 (no limit), -2 (fill the context) or at least 1")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value):
        return [value] if isinstance(value, str) else value

    @property
    def token_limit(self) -> int | None:
        return None if self.num_predict in (None, -1, -2) else self.num_predict

    def to_sampling_params(self) -> SamplingParams:
        fields = {
            "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
            "presence_penalty", "frequency_penalty", "seed",
        }  # fmt: skip
        return sampling_params(**self.model_dump(include=fields))


class GenerationFields(OpenAIModel):
    """What /api/chat and /api/generate share."""

    model: str = Field(min_length=1)
    stream: bool = True  # Ollama streams unless told not to
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high"] | None = None

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value):
        keep_alive_seconds(value)  # refused here, with the field's name, when unreadable
        return value

    @property
    def settings(self) -> Options:
        return self.options or Options()

    @property
    def keep_seconds(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    @property
    def reasoning_effort(self) -> str | None:
        return None if self.think is None else THINK_EFFORT[self.think]

    def json_schema(self) -> dict[str, Any] | None:
        if self.format == "json":
            return {"type": "object"}
        return self.format or None


class ToolFunction(OpenAIModel):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(OpenAIModel):
    function: ToolFunction


class ChatMessage(OpenAIModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None  # base64, without a data: prefix
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # the tool whose result a tool message holds


class ChatRequest(GenerationFields):
    messages: list[ChatMessage] = Field(default_factory=list)  # none: load (or unload) only
    tools: list[dict[str, Any]] | None = None

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, tools: list[dict[str, Any]] | None):
        return checked_function_tools(tools, only_functions=True)

    def constraints(self) -> Constraints:
        return Constraints(
            tools=[{"type": "function", "function": t["function"]} for t in self.tools or []],
            json_schema=self.json_schema(),
            schema_param="format",
        )


class GenerateRequest(GenerationFields):
    prompt: str | None = None  # none: load (or unload) only
    suffix: str | None = None
    system: str | None = None
    raw: bool = False  # the prompt as it is, without the chat template
    images: list[str] | None = None


class EmbedRequest(OpenAIModel):
    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = Field(None, gt=0)
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class EmbeddingsRequest(OpenAIModel):
    """The older /api/embeddings: one prompt, one vector."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ModelRequest(OpenAIModel):
    """/api/show and /api/delete; older clients send `name`."""

    model: str | None = None
    name: str | None = None

    @property
    def model_name(self) -> str:
        name = self.model or self.name
        if not name:
            raise RequestError(400, "model: Field required", "model", "missing_required_parameter")
        return name


class CopyRequest(OpenAIModel):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class PullRequest(ModelRequest):
    insecure: bool = False
    stream: bool = True
