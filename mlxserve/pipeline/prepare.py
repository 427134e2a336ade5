"""Preparation: find (or load) the model, check what it can do, render the chat template once,
and tokenize, so that every refusal comes before a response starts."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from mlxserve.engine.base import IMAGE_MARKER, ContextLengthExceeded, EngineRequest
from mlxserve.families.detect import MARKERS_TO_LOOK_UP, family_name
from mlxserve.families.syntax import SYNTAXES, ToolSyntax
from mlxserve.media.images import ImageLimits, load_images
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import ModelRecord
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.draft_model import resolve_speculation
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.fim import fim_prompt
from mlxserve.pipeline.reasoning import ReasoningSplitter, opened_in_prompt, reasoning_family
from mlxserve.pipeline.request import GenerateRequest
from mlxserve.pipeline.templates import (
    chat_template_for,
    messages_with_tools,
    render_chat,
    template_messages,
)
from mlxserve.sampling.validation import validate_sampling

REQUEST_TIMEOUT = 1800.0  # seconds; a safety net for stuck requests, far past a long reply


@dataclass(frozen=True)
class ServerLimits:
    """Server-wide limits every generation obeys."""

    max_tokens: int | None = None  # caps every reply; the length of one whose client set none
    request_timeout: float | None = REQUEST_TIMEOUT  # seconds from arrival; None: no limit
    images: ImageLimits = ImageLimits()


@dataclass
class Prepared:
    request: GenerateRequest
    loaded: LoadedModel
    engine_request: EngineRequest
    release: Callable[[], None]  # counts the request out of the model's queue
    deadline: float | None = None  # the event loop's time at which the request is stopped
    timeout: float = 0.0  # the limit behind `deadline`, for its error message
    tool_syntax: ToolSyntax | None = None  # set when the reply may hold tool calls
    reasoning: ReasoningSplitter | None = None  # set for a thinking model's reply

    @property
    def model(self) -> str:
        """The id the client knows the model by."""
        return self.loaded.identifier


async def prepare(
    registry: ModelRegistry, request: GenerateRequest, limits: ServerLimits = ServerLimits()
) -> Prepared:
    """Everything checked and measured, and the request counted into its model's queue (a 429
    when full): the caller must run generate() on the result, which counts it out."""
    started = asyncio.get_running_loop().time()
    if _image_parts(request) and (record := await registry.route(request.model)) is not None:
        _check_vision(record)  # refused before any model loads for it
    loaded = _generative(await registry.resolve(request.model, ttl=request.ttl))
    try:
        prepared = await _prepare_on(registry, loaded, request, limits)
    except ContextLengthExceeded as exc:
        # A prompt beyond the loaded context but within the model's maximum: the model is
        # reloaded with a longer context where memory allows (else a 400 that says why).
        param = request.prompt_param
        loaded = await registry.grow_context(loaded, exc.prompt_tokens, param)
        prepared = await _prepare_on(registry, loaded, request, limits)
    if limits.request_timeout:
        prepared.deadline = started + limits.request_timeout
        prepared.timeout = limits.request_timeout
    # Should a client leave before generation starts, the request still leaves the queue.
    weakref.finalize(prepared, prepared.release)
    return prepared


async def _prepare_on(
    registry: ModelRegistry, loaded: LoadedModel, request: GenerateRequest, limits: ServerLimits
) -> Prepared:
    speculation = await resolve_speculation(registry, loaded, request.speculation)
    release = loaded.admit()
    try:
        prepared = await _prepare_admitted(loaded, request, limits, release)
        prepared.engine_request.speculation = speculation
    except BaseException:
        release()
        raise
    return prepared


async def _prepare_admitted(
    loaded: LoadedModel, request: GenerateRequest, limits: ServerLimits, release
) -> Prepared:
    images = []
    if _image_parts(request):
        _check_vision(loaded.record, loaded.engine.vision)
        images = await load_images(request.conversation, limits.images)
    validate_sampling(request.sampling, loaded.engine.vocab_size)
    if not request.clamp_max_tokens:
        _check_token_limit(request.max_tokens, loaded.engine.context_length)
    syntax = thinking = None
    ends: tuple[str, ...] = ()  # markers that end a fill-in-the-middle answer
    if request.conversation is None:
        (prompt, ends), add_special_tokens = await _raw_prompt(loaded, request), True
    else:
        # Rendering a long conversation takes a while: in a thread, off the event loop.
        if request.constraints.wants_tools:
            syntax = SYNTAXES[await model_family(loaded)]
        prompt, thinking = await asyncio.to_thread(_chat_prompt, loaded, request, syntax)
        add_special_tokens = False  # the template writes BOS itself
    engine_request = EngineRequest(
        prompt=prompt,
        sampling=request.sampling,
        max_tokens=_reply_limit(request.max_tokens, limits.max_tokens),
        stop=[*request.stop, *ends],
        add_special_tokens=add_special_tokens,
        # A schema's check and grammar validation take a while: off the event loop.
        grammar=await _grammar(loaded, request, syntax),
        images=images,
        top_logprobs=request.top_logprobs,
    )
    if images and prompt.count(IMAGE_MARKER) != len(images):
        raise RequestError(
            400,
            f"the prompt marks {prompt.count(IMAGE_MARKER)} image places for {len(images)} "
            f"images (is '{IMAGE_MARKER}' in the text?)",
            "messages",
            "invalid_image",
        )
    if engine_request.grammar is not None:
        unsupported = await loaded.engine.grammar_support_error(engine_request.grammar)
        if unsupported:
            param = request.constraints.schema_param if request.constraints.json_schema else "tools"
            raise RequestError(400, unsupported, param, "grammar_not_supported")
    try:  # measured now, so a prompt that fills the context is a 400 even on a stream
        await loaded.engine.prompt_and_budget(engine_request)
    except ContextLengthExceeded as exc:
        exc.param = request.prompt_param
        raise
    if request.constraints.json_schema is not None:
        syntax = None  # the reply is the schema's JSON, never a call
    grammar = engine_request.grammar
    if grammar is not None and grammar.trigger is None:
        thinking = None  # the grammar holds from the first token: no room to think
    # Markers the output stage reads, which engines would otherwise hide as special tokens.
    visible = (thinking.syntax.special_pieces if thinking else ()) + (
        syntax.markers if syntax else ()
    )
    visible += ends  # shown so that the stop strings above can end the answer on them
    engine_request.visible_specials = tuple(dict.fromkeys(visible))
    return Prepared(
        request, loaded, engine_request, release, tool_syntax=syntax, reasoning=thinking
    )


async def model_family(loaded: LoadedModel) -> str:
    """The model's tool-call family, found once: its load's or manifest's `tool_format`, else
    told from its chat template, vocabulary and architecture."""
    if not loaded.family:
        engine = loaded.engine
        single = (await engine.special_ids(MARKERS_TO_LOOK_UP)).values()
        override = loaded.tool_format or loaded.record.tool_format or None
        loaded.family = family_name(
            engine.chat_template, loaded.record.architecture, set(single), override
        )
    return loaded.family


async def _grammar(loaded: LoadedModel, request: GenerateRequest, syntax: ToolSyntax | None):
    """The request's grammar, with the syntax's markers that are one token in this vocabulary
    written as that token."""
    special = {}
    if syntax is not None and request.constraints.json_schema is None:
        special = {m: i for i, m in (await loaded.engine.special_ids(syntax.markers)).items()}
    # A schema's check and grammar validation take a while: off the event loop.
    return await asyncio.to_thread(compile_constraints, request.constraints, syntax, special)


async def _raw_prompt(
    loaded: LoadedModel, request: GenerateRequest
) -> tuple[str | list[int], tuple[str, ...]]:
    """The raw prompt as sent, or the text around a cursor in the model's fill-in-the-middle
    tokens; with the markers that end the answer besides end-of-text."""
    if request.fill_in is not None:
        return await fim_prompt(loaded, request.fill_in)
    _check_token_ids(request.prompt, loaded.engine.vocab_size)
    return request.prompt, ()


def _chat_prompt(
    loaded: LoadedModel, request: GenerateRequest, syntax: ToolSyntax | None
) -> tuple[str, ReasoningSplitter | None]:
    """The rendered conversation and the reasoning splitter of a thinking model; `syntax`:
    the tool-call syntax, when the reply may hold calls."""
    engine = loaded.engine
    template = chat_template_for(engine.chat_template, loaded.record.architecture)
    messages = template_messages(request.conversation)
    tools = request.constraints.tools if syntax else []
    messages = messages_with_tools(messages, tools, syntax, template)
    prompt = render_chat(
        template,
        messages,
        bos_token=engine.bos_token,
        eos_token=engine.eos_token,
        tools=tools or None,
        reasoning_effort=request.reasoning_effort,
    )
    thinking = reasoning_family(template)
    if thinking is None:
        return prompt, None
    return prompt, ReasoningSplitter(thinking, opened_in_prompt(thinking, prompt))


def _image_parts(request: GenerateRequest) -> bool:
    return bool(request.conversation) and any(turn.has_images for turn in request.conversation)


def _check_vision(record: ModelRecord, engine_vision: bool = True) -> None:
    if record.type == "vlm" and engine_vision:
        return
    raise RequestError(
        400,
        f"model '{record.id}' has no vision support and cannot read images; "
        "load a vision model (type vlm in /api/v0/models)",
        "messages",
        "images_not_supported",
    )


# Models that write no text, and the route that serves each kind.
ROUTE_OF_KIND = {
    "embeddings": ("an embedding", "/v1/embeddings"),
    "speech": ("a speech", "/v1/audio/transcriptions"),
    "rerank": ("a reranker", "/v1/rerank"),
}


def _generative(loaded: LoadedModel) -> LoadedModel:
    if (kind := ROUTE_OF_KIND.get(loaded.record.type)) is not None:
        message = f"model '{loaded.identifier}' is {kind[0]} model; use {kind[1]}"
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
