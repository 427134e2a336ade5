"""OpenAI text completions: a raw prompt (or a list of them) in, a text_completion object or its
chunks out."""

from __future__ import annotations

from quart import Blueprint, request

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.openai.formatting import ModelExtras, openai_response
from mlxserve.api.openai.objects import TextCompletion
from mlxserve.api.openai.protocol import CompletionRequest
from mlxserve.api.shared.protocol import new_id
from mlxserve.pipeline.request import GenerateRequest

blueprint = Blueprint("openai_completions", __name__)


@blueprint.post("/v1/completions")
@answers(TextCompletion)
@with_body(CompletionRequest)
async def completions(body: CompletionRequest):
    """OpenAI's text completion, streamed or whole."""
    return await respond(body)


async def respond(body: CompletionRequest, extras: ModelExtras | None = None):
    """Each prompt of a list is answered as its own choices, in order."""
    response_id = new_id("cmpl")
    requests = [
        GenerateRequest(
            model=body.model,
            sampling=body.to_sampling_params(),
            speculation=body.speculation(),
            prompt=prompt,
            fill_in=body.fill_in(prompt),
            max_tokens=body.token_limit,
            stop=body.stop_list,
            ttl=body.ttl,
            top_logprobs=body.requested_logprobs,
            echo=body.echo,
            prompt_param="prompt",
            response_id=response_id,
            endpoint=request.path,
        )
        for prompt in body.prompts
    ]
    return await openai_response("text", requests, body.n, body.stream, body.include_usage, extras)
