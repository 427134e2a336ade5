"""Ollama's answers as pydantic models: chat and generate chunks (the last one with the
generation's figures in nanoseconds), embeddings, the model lists of /api/tags and /api/ps,
/api/show's description, pull progress and the version. The routes build these and send them
with `as_dict`; their views name them with `answers`, so the OpenAPI document gives each its
schema."""

from __future__ import annotations

from typing import Any, Literal

from mlxserve.api.shared.protocol import Answer


class CallFunction(Answer):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(Answer):
    function: CallFunction


class AssistantMessage(Answer):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None


class Chunk(Answer):
    """What every chat and generate chunk carries; the last (`done`) adds why and how long."""

    model: str
    created_at: str
    done: bool
    done_reason: str | None = None  # stop | length | load | unload
    total_duration: int | None = None  # nanoseconds, as every duration here
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatChunk(Chunk):
    message: AssistantMessage


class GenerateChunk(Chunk):
    response: str
    thinking: str | None = None


class EmbedResult(Answer):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingResult(Answer):
    embedding: list[float]


class ModelDetails(Answer):
    parent_model: str
    format: str  # mlx | gguf
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class TagsModel(Answer):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class Tags(Answer):
    models: list[TagsModel]


class RunningModel(Answer):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class Running(Answer):
    models: list[RunningModel]


class ModelDescription(Answer):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class PullStatus(Answer):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class Version(Answer):
    version: str
