"""The documented shapes of the answers that the Responses API's route builds as dicts: named on
its views with `answers`, so the OpenAPI document gives each a real schema and fuzzing checks
every answer against it. Extra fields are allowed, as the API allows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# /v1/responses


class ResponseOutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list


class ResponseMessageItem(BaseModel):
    type: Literal["message"]
    id: str
    role: Literal["assistant"]
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[ResponseOutputText]


class ResponseReasoningItem(BaseModel):
    type: Literal["reasoning"]
    id: str
    summary: list


class ResponseFunctionCallItem(BaseModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str  # JSON text


class ResponseCustomToolCallItem(BaseModel):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str


class ResponseMcpListToolsItem(BaseModel):
    type: Literal["mcp_list_tools"]
    id: str
    server_label: str
    tools: list[dict]


class ResponseMcpCallItem(BaseModel):
    type: Literal["mcp_call"]
    id: str
    server_label: str
    name: str
    arguments: str  # JSON text
    output: str | None
    error: dict | None  # OpenAI's McpToolCallError shape


class ResponseMcpApprovalRequestItem(BaseModel):
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


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict
    output_tokens_details: dict


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[ResponseOutputItem]
    usage: ResponseUsage | None
