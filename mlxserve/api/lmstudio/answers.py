"""The answers of LM Studio's /api/v0 and /api/v1 as pydantic models: model entries, loaded
instances, load and unload results, /api/v1/chat's result and items, download jobs, and the stats
/api/v0 adds to OpenAI's objects. The routes build these and send them with `as_dict`; their views
name them with `answers`, so the OpenAPI document gives each its schema and fuzzing checks every
answer against it."""

from __future__ import annotations

from typing import Literal

from mlxserve.api.shared.protocol import Answer

# /api/v0


class V0Model(Answer):
    id: str
    object: Literal["model"]
    type: str  # llm | vlm | embeddings
    publisher: str
    arch: str
    compatibility_type: str  # the format: mlx | gguf | hf
    quantization: str
    state: Literal["loaded", "not-loaded"]
    max_context_length: int
    source: str  # store | huggingface | lmstudio (models found in place)
    loaded_context_length: int | None = None  # only when loaded
    tool_format: str | None = None  # the tool-call family: named by hand, or found once loaded
    kv_bits: int | None = None  # loaded with a quantized KV cache of this many bits


class V0ModelList(Answer):
    object: Literal["list"]
    data: list[V0Model]


class V0Instance(Answer):
    """A loaded model as `mlxserve ps` shows it."""

    identifier: str
    model: str
    engine: str
    format: str
    context_length: int
    memory_bytes: int
    ttl: int | float | None  # as the client gave it: 300 stays 300
    idle_seconds: float
    active_requests: int
    jit: bool
    loaded_at: int
    distributed: dict | None = None  # mode, backend, ranks and rank of a model split across ranks


class V0LoadedList(Answer):
    object: Literal["list"]
    data: list[V0Instance]
    loading: list[str]


class V0LoadResult(V0Instance, V0Model):
    """The model's entry and its instance, with the load's time."""

    state: Literal["loaded"]
    load_time: float
    already_loaded: bool


class V0UnloadResult(Answer):
    identifier: str
    state: Literal["not-loaded"]


class V0Stats(Answer):
    tokens_per_second: float
    time_to_first_token: float
    generation_time: float
    stop_reason: str
    # speculative decoding, in LM Studio's names
    draft_model: str | None = None
    total_draft_tokens_count: int | None = None
    accepted_draft_tokens_count: int | None = None
    rejected_draft_tokens_count: int | None = None
    ignored_draft_tokens_count: int | None = None


OptionValue = str | int | float | bool | list[str] | None


class V0ServerOptions(Answer):
    """mlxserve's own: the options of `mlxserve serve` this server runs with, by name (`port`,
    `api_key`...), the API key only as "set" or null."""

    options: dict[str, OptionValue]


class V0ModelInfo(Answer):
    arch: str
    quant: str
    format: str
    context_length: int


# /api/v1


class V1InstanceConfig(Answer):
    context_length: int
    parallel: int | None = None  # LM Studio leaves it out for embedding models


class V1Instance(Answer):
    id: str
    config: V1InstanceConfig


class V1Quantization(Answer):
    name: str
    bits_per_weight: int | None


class V1Capabilities(Answer):
    vision: bool
    trained_for_tool_use: bool


class V1Model(Answer):
    type: Literal["llm", "embedding"]
    publisher: str
    key: str
    display_name: str
    quantization: V1Quantization | None  # None for a model stored unquantized
    size_bytes: int
    params_string: str | None
    loaded_instances: list[V1Instance]
    max_context_length: int
    format: str
    # LM Studio leaves these out for embedding models
    architecture: str | None = None
    capabilities: V1Capabilities | None = None
    description: str | None = None


class V1ModelList(Answer):
    models: list[V1Model]


class V1LoadConfig(Answer):
    context_length: int


class V1LoadResult(Answer):
    type: Literal["llm", "embedding"]
    instance_id: str
    load_time_seconds: float
    status: Literal["loaded"]
    load_config: V1LoadConfig | None = None  # when the request asks for it


class V1UnloadResult(Answer):
    instance_id: str


class V1TextItem(Answer):
    type: Literal["message", "reasoning"]
    content: str


class V1ToolCallItem(Answer):
    type: Literal["tool_call"]
    tool: str
    provider_info: dict
    arguments: dict
    output: str


class V1InvalidCallMetadata(Answer):
    type: Literal["invalid_arguments"]
    tool_name: str
    arguments: dict | None = None  # when they were a JSON object
    provider_info: dict


class V1InvalidToolCallItem(Answer):
    type: Literal["invalid_tool_call"]
    reason: str
    metadata: V1InvalidCallMetadata


V1OutputItem = V1TextItem | V1ToolCallItem | V1InvalidToolCallItem


class V1ChatStats(Answer):
    input_tokens: int
    total_output_tokens: int
    reasoning_output_tokens: int
    tokens_per_second: float
    time_to_first_token_seconds: float
    stop_reason: str  # mlxserve's, as in /api/v0: why the reply ended
    model_load_time_seconds: float | None = None  # when this request loaded the model


class V1ChatResult(Answer):
    model_instance_id: str
    output: list[V1OutputItem]
    stats: V1ChatStats | None = None  # left out of a stream's result after an error
    response_id: str | None = None  # when the chat is stored


class V1DownloadJob(Answer):
    status: Literal["downloading", "completed", "failed", "already_downloaded"]
    job_id: str | None = None  # absent when the model was downloaded already
    started_at: str | None = None
    total_size_bytes: int | None = None  # once the files to fetch are known
    downloaded_bytes: int | None = None
    bytes_per_second: int | None = None  # while downloading
    completed_at: str | None = None
    error: str | None = None
