"""Pieces every API family's protocol uses: the base model of requests, which accepts and logs
unknown fields, and that of answers; reasoning effort as chat templates know it, the sampling
fields' ranges and LM Studio's defaults, the JSON schema a response format asks for (chat
completions and the Responses API), and new response ids."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlxserve.pipeline.errors import RequestError
from mlxserve.sampling.params import (
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    SamplingParams,
)

log = logging.getLogger(__name__)

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]

# The sampling fields' legal ranges, one declaration each for every family that takes them.
Temperature = Annotated[float | None, Field(ge=0, le=2)]
TopP = Annotated[float | None, Field(gt=0, le=1)]
TopK = Annotated[int | None, Field(ge=0, le=2**31 - 1)]  # beyond any vocabulary: off
MinP = Annotated[float | None, Field(ge=0, le=1)]
RepeatPenalty = Annotated[float | None, Field(ge=0.01, le=10)]


def template_effort(effort: str | None) -> str | None:
    """Chat templates know none..high: the efforts above high reach them as high."""
    return "high" if effort in ("xhigh", "max") else effort


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self):
        if self.model_extra:
            log.info("ignoring unsupported fields: %s", ", ".join(sorted(self.model_extra)))
        return self


class Answer(BaseModel):
    """An answer, or a piece of one, built with the fields it carries and sent with
    `exclude_unset`: a field always sent is always set, even to null; an optional one (a call's
    namespace, a usage's cache counts) only when it has a value."""

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


def checked_function_tools(tools: list[dict] | None, only_functions: bool) -> list[dict] | None:
    """Function tools need a name and a schema object; with `only_functions` False, tools of
    other types (OpenAI's hosted ones) pass untouched."""
    for index, tool in enumerate(tools or []):
        hosted = "function" not in tool and tool.get("type", "function") != "function"
        if hosted and not only_functions:
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not function.get("name"):
            raise ValueError(f'[{index}] must be {{"type": "function", "function": '
                             '{"name": ..., "parameters": {...}}}')  # fmt: skip
        if not isinstance(function.get("parameters") or {}, dict):
            raise ValueError(f"[{index}].function.parameters must be a JSON schema object")
    return tools


def sampling_params(**fields) -> SamplingParams:
    """SamplingParams from request fields; a field left out or None takes LM Studio's default."""
    defaults = {
        "temperature": DEFAULT_TEMPERATURE,
        "top_p": DEFAULT_TOP_P,
        "top_k": DEFAULT_TOP_K,
        "min_p": DEFAULT_MIN_P,
        "repeat_penalty": DEFAULT_REPEAT_PENALTY,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    chosen = {name: value for name, value in fields.items() if value is not None}
    return SamplingParams(**{**defaults, **chosen})


def response_schema(value: dict | None, param: str, nested: bool) -> dict | None:
    """The JSON schema a response format asks for: None for text, any object for json_object.
    Chat nests the schema under "json_schema"; the Responses API's text.format does not. A
    `strict` format's schema carries llguidance's `lenient: false`, so that what the grammar
    cannot enforce is refused rather than relaxed and checked after sampling."""
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        message = f"{param}.type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
        raise RequestError(400, message, param, "invalid_value")
    spec = value.get("json_schema") if nested else value
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        where = f"{param}.json_schema.schema" if nested else f"{param}.schema"
        raise RequestError(
            400, f"{where}: a JSON schema object is required", param, "invalid_schema"
        )
    if spec.get("strict") is not True:
        return schema
    options = schema.get("x-guidance") if isinstance(schema.get("x-guidance"), dict) else {}
    return {**schema, "x-guidance": {**options, "lenient": False}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"
