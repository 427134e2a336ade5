"""The documented shapes of the answers that LM Studio's /api/v0 and /api/v1 routes build as
dicts: named on their views with `answers`, so the OpenAPI document gives each a real schema and
fuzzing checks every answer against it. Extra fields are allowed, as the APIs allow them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# /api/v0


class V0Instance(BaseModel):
    identifier: str
    model: str
    engine: str
    format: str
    context_length: int
    memory_bytes: int
    idle_seconds: float
    active_requests: int


class V0LoadedList(BaseModel):
    object: Literal["list"]
    data: list[V0Instance]
    loading: list[str]


class V0LoadResult(V0Instance):
    id: str
    state: Literal["loaded"]
    load_time: float
    already_loaded: bool


class V0UnloadResult(BaseModel):
    identifier: str
    state: Literal["not-loaded"]


# /api/v1


class V1Instance(BaseModel):
    id: str
    config: dict


class V1Model(BaseModel):
    type: Literal["llm", "embedding"]
    key: str
    publisher: str
    display_name: str
    format: str
    max_context_length: int
    loaded_instances: list[V1Instance]


class V1ModelList(BaseModel):
    models: list[V1Model]


class V1LoadResult(BaseModel):
    type: Literal["llm", "embedding"]
    instance_id: str
    load_time_seconds: float
    status: Literal["loaded"]


class V1UnloadResult(BaseModel):
    instance_id: str


class V1TextItem(BaseModel):
    type: Literal["message", "reasoning"]
    content: str


class V1ToolCallItem(BaseModel):
    type: Literal["tool_call"]
    tool: str
    arguments: dict
    output: str
    provider_info: dict


class V1InvalidToolCallItem(BaseModel):
    type: Literal["invalid_tool_call"]
    reason: str
    metadata: dict


class V1ChatStats(BaseModel):
    input_tokens: int
    total_output_tokens: int
    reasoning_output_tokens: int
    tokens_per_second: float
    time_to_first_token_seconds: float


class V1ChatResult(BaseModel):
    model_instance_id: str
    output: list[V1TextItem | V1ToolCallItem | V1InvalidToolCallItem]
    stats: V1ChatStats


class V1DownloadJob(BaseModel):
    status: Literal["downloading", "completed", "failed", "already_downloaded"]
    job_id: str | None = None  # absent when the model was downloaded already
    started_at: str | None = None
