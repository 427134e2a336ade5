"""OpenAI's response objects as pydantic models: chat completions and their chunks, text
completions, usage, the model list. Views render them, and the OpenAPI document describes each
route's answer with them, so fuzzing checks answers against these shapes.

Objects are built with only the fields they carry and dumped with `exclude_unset`: a field
OpenAI always sends (`finish_reason`, `logprobs`) is always set, even to null; an optional one
(`reasoning_content`, `tool_calls`, `usage` on a chunk) is left out unless it has a value."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from mlxserve.api.shared.logprobs import ContentLogprob


class OpenAIObject(BaseModel):
    # /api/v0 adds its stats, model_info and runtime beside OpenAI's fields.
    model_config = ConfigDict(extra="allow")

    def json_text(self) -> str:
        return self.model_dump_json(exclude_unset=True)

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


class FunctionCall(OpenAIObject):
    name: str
    arguments: str


class ToolCall(OpenAIObject):
    id: str
    type: Literal["function"]
    function: FunctionCall


class FunctionDelta(OpenAIObject):
    name: str | None = None
    arguments: str


class ToolCallDelta(OpenAIObject):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class PromptTokensDetails(OpenAIObject):
    cached_tokens: int


class CompletionTokensDetails(OpenAIObject):
    reasoning_tokens: int


class Usage(OpenAIObject):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ChatLogprobs(OpenAIObject):
    content: list[ContentLogprob] | None
    refusal: None


class TextLogprobs(OpenAIObject):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class AssistantMessage(OpenAIObject):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None  # the field LM Studio, vLLM and DeepSeek's API use
    tool_calls: list[ToolCall] | None = None


class ChatChoice(OpenAIObject):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class ChatCompletion(OpenAIObject):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(OpenAIObject):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(OpenAIObject):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(OpenAIObject):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None  # only on the last chunk, when stream_options asks for it


class TextChoice(OpenAIObject):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: str | None


class TextCompletion(OpenAIObject):
    """A whole text completion and each of its streamed chunks alike."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: Usage | None = None


class ModelCard(OpenAIObject):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: str  # llm | vlm | embeddings, as LM Studio's /api/v0 says


class ModelList(OpenAIObject):
    object: Literal["list"]
    data: list[ModelCard]


class Embedding(OpenAIObject):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(OpenAIObject):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(OpenAIObject):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Health(OpenAIObject):
    status: Literal["ok"]
    loaded: list[str] | None = None  # with the key (or none set) only
    active_requests: int | None = None
    distributed: dict | None = None  # mode, backend, ranks and rank of a model split across ranks
