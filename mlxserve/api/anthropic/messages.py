"""Anthropic's Messages API (/v1/messages and /v1/messages/count_tokens), as Claude Code and the
Anthropic SDKs speak it (their beta surface too: `?beta=true` and `anthropic-beta` headers are
accepted): the request prepared as the neutral request, the output events rendered as
Anthropic's stream events or the whole message they build."""

from __future__ import annotations

from quart import Blueprint, jsonify, request

from mlxserve.api.anthropic.answers import (
    AnthropicMessage,
    AnthropicTokenCount,
    AnthropicTokenCountContext,
)
from mlxserve.api.anthropic.context import prepare_message
from mlxserve.api.anthropic.conversation import Conversation
from mlxserve.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from mlxserve.api.anthropic.stream import MessageBuilder, Reply
from mlxserve.api.http.errors import anthropic_body
from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.http.sse import sse_response
from mlxserve.api.shared.protocol import new_id, sampling_params
from mlxserve.pipeline.generate import generate
from mlxserve.pipeline.request import GenerateRequest
from mlxserve.sampling.params import SamplingParams

blueprint = Blueprint("anthropic_messages", __name__)


@blueprint.post("/v1/messages")
@answers(AnthropicMessage)
@with_body(MessagesRequest)
async def create_message(body: MessagesRequest):
    """Anthropic's Messages API: a message, streamed as its events or whole."""
    response_id = new_id("msg")
    sampling = body.to_sampling_params()

    def neutral(conversation: Conversation) -> GenerateRequest:
        made = to_request(body, conversation, body.max_tokens, sampling, response_id)
        made.stop = body.stop_sequences or []
        return made

    message = await prepare_message(body, neutral)
    prepared = message.prepared
    reply = Reply(
        id=response_id,
        model=body.model,
        prompt_tokens=message.prompt_tokens,
        max_tokens=body.max_tokens,
        context_length=prepared.loaded.engine.context_length,
        shows_thinking=body.shows_thinking,
        context_management=message.context_management,
    )
    builder = MessageBuilder(reply)
    events = builder.events(generate(prepared))
    if body.stream:
        return await sse_response(
            events, done_marker=False, named_events=True, error_body=anthropic_body
        )
    async for _ in events:
        pass
    return jsonify(builder.whole())


@blueprint.post("/v1/messages/count_tokens")
@answers(AnthropicTokenCount)
@with_body(CountTokensRequest)
async def count_tokens(body: CountTokensRequest):
    """The number of input tokens a message request would use, after its context edits."""
    response_id = new_id("msg")
    message = await prepare_message(
        body,
        lambda conversation: to_request(body, conversation, None, sampling_params(), response_id),
    )
    message.prepared.release()  # measured, never generated
    answer = AnthropicTokenCount(input_tokens=message.prompt_tokens)
    if message.applied_edits is not None:
        original = message.original_tokens
        answer.context_management = AnthropicTokenCountContext(original_input_tokens=original)
    return answer.as_dict()


def to_request(
    body: CountTokensRequest,
    conversation: Conversation,
    max_tokens: int | None,
    sampling: SamplingParams,
    response_id: str,
) -> GenerateRequest:
    return GenerateRequest(
        model=body.model,
        sampling=sampling,
        conversation=conversation.turns,
        max_tokens=max_tokens,
        constraints=body.constraints(conversation.tools),
        reasoning_effort=body.reasoning_effort(conversation.effort),
        clamp_max_tokens=True,  # clients ask for far more than a local context holds
        response_id=response_id,
        endpoint=request.path,
    )
