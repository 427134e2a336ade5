"""The Responses API's answer as pydantic models: the response object and the output items it is
made of, which its stream's events carry too. The route builds these and sends them with
`as_dict`; its view names the response with `answers`, so the OpenAPI document gives it its
schema and fuzzing checks every answer against it."""

from __future__ import annotations

from typing import Literal

from mlxserve.api.shared.logprobs import ContentLogprob
from mlxserve.api.shared.protocol import Answer

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class ResponseOutputText(Answer):
    type: Literal["output_text"]
    text: str
    annotations: list
    logprobs: list[ContentLogprob]  # empty unless `include` asks for them


class ResponseMessageItem(Answer):
    type: Literal["message"]
    id: str
    status: ItemStatus
    role: Literal["assistant"]
    content: list[ResponseOutputText]


class ResponseSummaryText(Answer):
    type: Literal["summary_text"]
    text: str


class ResponseReasoningText(Answer):
    type: Literal["reasoning_text"]
    text: str


class ResponseReasoningItem(Answer):
    type: Literal["reasoning"]
    id: str
    summary: list[ResponseSummaryText]
    content: list[ResponseReasoningText]
    encrypted_content: str | None = None  # when `include` asks for it


class ResponseFunctionCallItem(Answer):
    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str  # JSON text
    status: ItemStatus
    namespace: str | None = None  # a namespaced tool's


class ResponseCustomToolCallItem(Answer):
    type: Literal["custom_tool_call"]
    id: str
    call_id: str
    name: str
    input: str
    namespace: str | None = None


class ResponseMcpListToolsItem(Answer):
    type: Literal["mcp_list_tools"]
    id: str
    server_label: str
    tools: list[dict]
    error: str | None


class ResponseMcpCallItem(Answer):
    type: Literal["mcp_call"]
    id: str
    server_label: str
    name: str
    arguments: str  # JSON text
    approval_request_id: str | None
    output: str | None
    error: dict | None  # OpenAI's McpToolCallError shape
    status: Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseMcpApprovalRequestItem(Answer):
    type: Literal["mcp_approval_request"]
    id: str
    server_label: str
    name: str
    arguments: str


ResponseOutputItem = (
    ResponseMessageItem
    | ResponseReasoningItem
    | ResponseFunctionCallItem
    | ResponseCustomToolCallItem
    | ResponseMcpListToolsItem
    | ResponseMcpCallItem
    | ResponseMcpApprovalRequestItem
)


class ResponseInputTokensDetails(Answer):
    cached_tokens: int
    cache_write_tokens: int  # no separate cache writes are billed here; the SDK requires it


class ResponseOutputTokensDetails(Answer):
    reasoning_tokens: int


class ResponseUsage(Answer):
    input_tokens: int
    input_tokens_details: ResponseInputTokensDetails
    output_tokens: int
    output_tokens_details: ResponseOutputTokensDetails
    total_tokens: int


class ResponseIncompleteDetails(Answer):
    reason: Literal["max_output_tokens"]


class ResponseObject(Answer):
    """The response, with the request's settings echoed as OpenAI's does."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    background: bool
    incomplete_details: ResponseIncompleteDetails | None
    error: dict | None
    model: str
    output: list[ResponseOutputItem]
    usage: ResponseUsage | None  # None until the reply ends
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    temperature: float | None
    top_p: float | None
    top_logprobs: int | None
    tools: list[dict]
    tool_choice: str | dict | None
    parallel_tool_calls: bool
    previous_response_id: str | None
    store: bool
    text: dict
    truncation: Literal["auto", "disabled"]
    metadata: dict
    reasoning: dict | None
    service_tier: str
    prompt_cache_key: str | None
    prompt_cache_retention: str | None
    safety_identifier: str | None
    user: str | None
