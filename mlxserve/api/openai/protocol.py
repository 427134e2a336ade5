"""Request models for the OpenAI-compatible endpoints, fields in the order of OpenAI's reference,
then the LM Studio extensions. Unknown fields are accepted and logged, never rejected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlxserve.api.shared.protocol import (
    MinP,
    OpenAIModel,
    ReasoningEffort,
    RepeatPenalty,
    Temperature,
    TopK,
    TopP,
    checked_function_tools,
    response_schema,
    sampling_params,
)
from mlxserve.engine.base import Speculation
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints, FillInMiddle
from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.sampler import MAX_TOP_LOGPROBS


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingFields(OpenAIModel):
    """Fields shared by every generating endpoint."""

    model: str
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = None  # -1 or absent: until the context is full
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature = None
    top_p: TopP = None
    n: int = 1  # choices per prompt, bounded by the pipeline (a 400 naming `n`)
    user: str | None = None
    # LM Studio extensions
    top_k: TopK = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    ttl: int | None = Field(None, gt=0)  # seconds a JIT-loaded model may stay idle
    draft_model: str | None = None  # a small model of the same vocabulary drafts tokens
    prompt_lookup: bool | None = None  # mlxserve: draft from the prompt (None: server default)

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens_positive(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 1:
            raise ValueError("must be -1 (until the context is full) or at least 1")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {key} must be in [-100, 100], got {bias}")
        return value

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int | None:
        return None if self.max_tokens in (None, -1) else self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def speculation(self) -> Speculation:
        return Speculation(prompt_lookup=self.prompt_lookup, draft_model=self.draft_model)

    def to_sampling_params(self) -> SamplingParams:
        return sampling_params(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            seed=self.seed,
        )


class ContentPart(OpenAIModel):
    type: Literal["text", "image_url", "input_text", "input_image"]
    text: str | None = None
    image_url: Any = None


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # An assistant's earlier thinking, as servers return it (vLLM names it `reasoning`).
    reasoning_content: str | None = None
    reasoning: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _calls_have_functions(cls, calls: list[dict[str, Any]] | None):
        for index, call in enumerate(calls or []):
            function = call.get("function", call)
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ValueError(f'[{index}] must be {{"id", "type": "function", "function": '
                                 '{"name": ..., "arguments": "{...}"}}')  # fmt: skip
            if not isinstance(function.get("arguments", "{}"), (str, dict)):
                raise ValueError(f"[{index}].function.arguments must be a JSON object's text")
        return calls

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    reasoning_effort: ReasoningEffort | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("tools")
    @classmethod
    def _tools_are_functions(cls, tools: list[dict[str, Any]] | None):
        return checked_function_tools(tools, only_functions=False)

    def constraints(self) -> Constraints:
        choice, forced = tool_choice(self.tool_choice, lambda c: c.get("function", {}))
        return Constraints(
            tools=self.tools or [],
            tool_choice=choice,
            forced_tool=forced,
            parallel_tool_calls=self.parallel_tool_calls,
            json_schema=response_schema(self.response_format, "response_format", nested=True),
        )

    @model_validator(mode="after")
    def _newer_token_limit_name(self):
        if self.max_completion_tokens is not None and self.max_tokens is None:
            self.max_tokens = self._max_tokens_positive(self.max_completion_tokens)
        return self

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise RequestError(
                400, "top_logprobs needs logprobs: true", "top_logprobs", "invalid_value"
            )
        return self

    @property
    def requested_logprobs(self) -> int | None:
        """How many alternatives each token's log-probability comes with; None: not asked."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    # One prompt (text or token ids), or a list of them, each answered as its own choices.
    prompt: str | list[int] | list[str] | list[list[int]] = Field(min_length=1)
    echo: bool = False
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # alternatives per token
    suffix: str | None = None  # the text after the insertion point: fill-in-the-middle

    @model_validator(mode="after")
    def _suffix_needs_text(self):
        if self.suffix is not None and not isinstance(self.prompt, str):
            message = "suffix needs the prompt as text (the code before the insertion point)"
            raise RequestError(400, message, "suffix", "invalid_value")
        return self

    def fill_in(self, prompt: str | list[int]) -> FillInMiddle | None:
        """A prompt and `suffix` as the text around a cursor, or None without a suffix."""
        if self.suffix is None:
            return None
        return FillInMiddle(prefix=str(prompt), suffix=self.suffix)

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens_positive(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 0:
            raise ValueError("must be -1 (until the context is full), 0 (with echo) or more")
        return value

    @model_validator(mode="after")
    def _no_tokens_only_with_echo(self):
        if self.max_tokens == 0 and not self.echo:
            message = "max_tokens 0 (the prompt alone) needs echo: true"
            raise RequestError(422, message, "max_tokens", "invalid_value")
        return self

    @property
    def requested_logprobs(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _no_empty_prompt(cls, value):
        if isinstance(value, list) and any(prompt in ("", []) for prompt in value):
            raise ValueError("the list holds an empty prompt")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)


def tool_choice(value, function_of) -> tuple[str, str | None]:
    """OpenAI's tool_choice as (auto | none | required, the forced function's name or None);
    `function_of` finds the {"name": ...} part of a named choice in the family's shape."""
    if value is None:
        return "auto", None
    if value in ("auto", "none", "required"):
        return value, None
    function = function_of(value) if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(name, str):
        return "required", name
    raise RequestError(
        400,
        "tool_choice must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
        "invalid_tool_choice",
    )
