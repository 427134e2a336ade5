"""Preparation: find (or load) the model, check what it can do, render the chat template once,
and tokenize, so that every refusal comes before a response starts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mlxserve.engine.base import ContextLengthExceeded, GenerationRequest
from mlxserve.models.registry import LoadedModel, ModelRegistry
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import GenerateRequest
from mlxserve.pipeline.templates import (
    chat_template_for,
    messages_with_tools,
    render_chat,
    template_messages,
)
from mlxserve.pipeline.tool_parsers import tool_family
from mlxserve.sampling.validation import validate_sampling


@dataclass
class Prepared:
    request: GenerateRequest
    loaded: LoadedModel
    engine_request: GenerationRequest
    tool_family: str | None = None  # set when the reply may hold tool calls

    @property
    def model(self) -> str:
        """The id the client knows the model by."""
        return self.loaded.identifier


async def prepare(
    registry: ModelRegistry, request: GenerateRequest, max_tokens_ceiling: int | None = None
) -> Prepared:
    """`max_tokens_ceiling` (the server's --max-tokens) caps every reply, and is the length of
    one whose client set none."""
    loaded = _generative(await registry.resolve(request.model, ttl=request.ttl))
    if request.conversation and any(turn.has_images for turn in request.conversation):
        raise RequestError(
            400,
            f"model '{loaded.identifier}' does not accept images",
            "messages",
            "images_not_supported",
        )
    validate_sampling(request.sampling, loaded.engine.vocab_size)
    _check_token_limit(request.max_tokens, loaded.engine.context_length)
    family = None
    if request.conversation is None:
        prompt, add_special_tokens = request.prompt, True
        _check_token_ids(prompt, loaded.engine.vocab_size)
    else:
        # Rendering a long conversation takes a while: in a thread, off the event loop.
        prompt, family = await asyncio.to_thread(_chat_prompt, loaded, request)
        add_special_tokens = False  # the template writes BOS itself
    engine_request = GenerationRequest(
        prompt=prompt,
        sampling=request.sampling,
        max_tokens=_reply_limit(request.max_tokens, max_tokens_ceiling),
        stop=request.stop,
        add_special_tokens=add_special_tokens,
        grammar=compile_constraints(request.constraints, family),
    )
    if engine_request.grammar is not None:
        unsupported = await loaded.engine.grammar_support_error()
        if unsupported:
            param = request.constraints.schema_param if request.constraints.json_schema else "tools"
            raise RequestError(400, unsupported, param, "grammar_not_supported")
    try:  # measured now, so a prompt that fills the context is a 400 even on a stream
        await loaded.engine.prompt_and_budget(engine_request)
    except ContextLengthExceeded as exc:
        exc.param = request.prompt_param
        raise
    if request.constraints.json_schema is not None:
        family = None  # the reply is the schema's JSON, never a call
    return Prepared(request, loaded, engine_request, family)


def _chat_prompt(loaded: LoadedModel, request: GenerateRequest) -> tuple[str, str | None]:
    """The rendered conversation, and the tool-call family when the reply may hold calls."""
    engine = loaded.engine
    template = chat_template_for(engine.chat_template, loaded.record.architecture)
    messages = template_messages(request.conversation)
    constraints, family, tools = request.constraints, None, []
    if constraints.wants_tools:
        family = tool_family(loaded.record.architecture, engine.chat_template)
        tools = constraints.tools
    messages = messages_with_tools(messages, tools, family, template)
    prompt = render_chat(
        template,
        messages,
        bos_token=engine.bos_token,
        eos_token=engine.eos_token,
        tools=tools or None,
    )
    return prompt, family


def _generative(loaded: LoadedModel) -> LoadedModel:
    if loaded.record.type == "embeddings":
        message = f"model '{loaded.identifier}' is an embedding model; use /v1/embeddings"
        raise RequestError(400, message, "model", "model_not_generative")
    return loaded


def _check_token_limit(max_tokens: int | None, context: int) -> None:
    if max_tokens is not None and max_tokens > context:
        raise RequestError(
            422,
            f"max_tokens must be at most the loaded context length {context}, got {max_tokens}",
            "max_tokens",
            "invalid_value",
        )


def _check_token_ids(prompt: str | list[int], vocab_size: int | None) -> None:
    if isinstance(prompt, str) or vocab_size is None:
        return
    if not all(0 <= token < vocab_size for token in prompt):
        message = f"prompt token ids must be in [0, {vocab_size})"
        raise RequestError(422, message, "prompt", "invalid_value")


def _reply_limit(asked: int | None, ceiling: int | None) -> int | None:
    if ceiling is None:
        return asked
    return min(asked or ceiling, ceiling)
