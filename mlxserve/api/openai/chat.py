"""OpenAI chat completions: the wire format parsed into the neutral request, and the output
events rendered as a chat.completion object or its chunks. /api/v0 serves the same with stats."""

from __future__ import annotations

import json

from quart import Blueprint, request

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.openai.formatting import ModelExtras, openai_response
from mlxserve.api.openai.objects import ChatCompletion
from mlxserve.api.openai.protocol import ChatCompletionRequest, ChatMessage
from mlxserve.api.shared.protocol import new_id, template_effort
from mlxserve.pipeline.request import (
    GenerateRequest,
    ImagePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Turn,
)

blueprint = Blueprint("openai_chat", __name__)


@blueprint.post("/v1/chat/completions")
@answers(ChatCompletion)
@with_body(ChatCompletionRequest)
async def chat_completions(body: ChatCompletionRequest):
    """OpenAI's chat completion, streamed or whole."""
    return await respond(body)


async def respond(body: ChatCompletionRequest, extras: ModelExtras | None = None):
    """`extras` adds fields (such as /api/v0's stats) once generation has ended."""
    neutral = to_request(body, new_id("chatcmpl"))
    return await openai_response("chat", [neutral], body.n, body.stream, body.include_usage, extras)


def to_request(body: ChatCompletionRequest, response_id: str) -> GenerateRequest:
    return GenerateRequest(
        model=body.model,
        sampling=body.to_sampling_params(),
        speculation=body.speculation(),
        conversation=[to_turn(message) for message in body.messages],
        max_tokens=body.token_limit,
        stop=body.stop_list,
        constraints=body.constraints(),
        ttl=body.ttl,
        reasoning_effort=template_effort(body.reasoning_effort),
        top_logprobs=body.requested_logprobs,
        response_id=response_id,
        endpoint=request.path,
    )


def to_turn(message: ChatMessage) -> Turn:
    role = "system" if message.role == "developer" else message.role
    parts: list[Part] = []
    thought = message.reasoning_content or message.reasoning
    if thought and message.role == "assistant":
        parts.append(ReasoningPart(thought))
    if message.role == "tool":
        # The result's text, then its images (a screenshot), seen as a user's images are.
        parts.append(ToolResultPart(message.tool_call_id or "", message.text))
        parts += [part for part in _content_parts(message) if isinstance(part, ImagePart)]
    else:
        parts += _content_parts(message)
    for call in message.tool_calls or []:
        function = call.get("function", call)
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        parts.append(ToolCallPart(call.get("id", ""), function.get("name", ""), arguments))
    return Turn(role, parts, message.name)


def _content_parts(message: ChatMessage) -> list[Part]:
    if not isinstance(message.content, list):
        return [TextPart(message.content)] if message.content else []
    parts: list[Part] = []
    for part in message.content:
        if part.type in ("text", "input_text"):
            parts.append(TextPart(part.text or ""))
        elif part.type in ("image_url", "input_image"):
            parts.append(ImagePart(_image_url(part.image_url)))
    return parts


def _image_url(value) -> str:
    return value.get("url", "") if isinstance(value, dict) else str(value or "")
