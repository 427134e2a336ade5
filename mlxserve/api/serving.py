"""Turning a parsed request into a GenerationRequest on a loaded model, and running it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mlxserve.api import logstream
from mlxserve.api.errors import APIError
from mlxserve.api.formatting import ResponseShape
from mlxserve.api.prompts import chat_template_for, render_chat
from mlxserve.api.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from mlxserve.api.tool_calls import messages_with_tools, wants_tools
from mlxserve.api.tool_parsers import tool_family
from mlxserve.engine.base import (
    ContextLengthExceeded,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
)
from mlxserve.models.registry import LoadedModel, ModelRegistry
from mlxserve.sampling.validation import validate_sampling


@dataclass
class PreparedGeneration:
    loaded: LoadedModel
    request: GenerationRequest
    shape: ResponseShape
    endpoint: str = field(default_factory=logstream.current_endpoint)  # for `log stream`
    stats: GenerationStats | None = None  # set when the generation ends
    tool_family: str | None = None  # set when the reply may hold tool calls


async def prepare_chat(
    registry: ModelRegistry, body: ChatCompletionRequest, prompt_param: str = "messages"
) -> PreparedGeneration:
    """`prompt_param` names the request field an over-long prompt came from."""
    loaded = _generative(await registry.resolve(body.model, ttl=body.ttl))
    if any(message.has_images for message in body.messages):
        raise APIError(
            400,
            f"model '{loaded.identifier}' does not accept images",
            "messages",
            "images_not_supported",
        )
    engine = loaded.engine
    template = chat_template_for(engine.chat_template, loaded.record.architecture)
    messages = [message.template_dict() for message in body.messages]
    family = None
    if wants_tools(body.tools, body.tool_choice):
        family = tool_family(loaded.record.architecture, engine.chat_template)
        messages = messages_with_tools(messages, body.tools, family, template)
    prompt = render_chat(
        template, messages, bos_token=engine.bos_token, eos_token=engine.eos_token, tools=body.tools
    )
    # The template writes BOS itself, so the tokenizer must not add another.
    request = _generation_request(loaded, body, prompt, add_special_tokens=False)
    await _check_prompt(loaded, request, prompt_param)
    shape = ResponseShape("chat", loaded.identifier)
    return PreparedGeneration(loaded, request, shape, tool_family=family)


async def prepare_completion(
    registry: ModelRegistry, body: CompletionRequest
) -> PreparedGeneration:
    loaded = _generative(await registry.resolve(body.model, ttl=body.ttl))
    request = _generation_request(loaded, body, body.prompt, add_special_tokens=True)
    await _check_prompt(loaded, request, "prompt")
    return PreparedGeneration(loaded, request, ResponseShape("text", loaded.identifier))


async def _check_prompt(loaded: LoadedModel, request: GenerationRequest, param: str) -> None:
    """Tokenize and measure the prompt before any response starts, so a prompt that fills the
    context is a 400 on a stream too rather than an error event after a 200."""
    try:
        await loaded.engine.prompt_and_budget(request)
    except ContextLengthExceeded as exc:
        exc.param = param
        raise


def _generative(loaded: LoadedModel) -> LoadedModel:
    if loaded.record.type == "embeddings":
        message = f"model '{loaded.identifier}' is an embedding model; use /v1/embeddings"
        raise APIError(400, message, "model", "model_not_generative")
    return loaded


def _generation_request(
    loaded: LoadedModel, body: SamplingFields, prompt, add_special_tokens: bool
) -> GenerationRequest:
    sampling = body.to_sampling_params()
    validate_sampling(sampling, loaded.engine.vocab_size)
    context = loaded.engine.context_length
    if body.token_limit is not None and body.token_limit > context:
        raise APIError(
            422,
            f"max_tokens must be at most the loaded context length {context}, "
            f"got {body.token_limit}",
            "max_tokens",
            "invalid_value",
        )
    return GenerationRequest(
        prompt=prompt,
        sampling=sampling,
        max_tokens=body.token_limit,
        stop=body.stop_list,
        add_special_tokens=add_special_tokens,
    )


async def run_to_end(prepared: PreparedGeneration) -> tuple[str, GenerationStats]:
    parts, stats = [], None
    async for event in generate(prepared):
        parts.append(event.text)
        stats = event.stats or stats
    return "".join(parts), stats


async def generate(prepared: PreparedGeneration) -> AsyncIterator[GenerationEvent]:
    """The engine's events, with the model marked busy so it is not unloaded mid-request."""
    loaded = prepared.loaded
    loaded.active_requests += 1
    try:
        with logstream.GenerationLog(prepared) as log_entry:
            async for event in loaded.engine.generate(prepared.request):
                log_entry.add(event)
                prepared.stats = event.stats or prepared.stats
                yield event
    finally:
        loaded.active_requests -= 1


async def stream_chunks(
    prepared: PreparedGeneration, include_usage: bool
) -> AsyncIterator[dict | str]:
    shape = prepared.shape
    if shape.kind == "chat":
        yield shape.chunk(None, role=True)
    async for event in generate(prepared):
        if event.text:
            yield shape.text_chunk_json(event.text)
        if event.stats:
            yield shape.chunk(None, finish_reason=event.stats.finish_reason)
            if include_usage:
                yield shape.usage_chunk(event.stats)
