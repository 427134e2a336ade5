"""LM Studio's native REST API v1 (/api/v1): the store's models with their capabilities and
loaded instances, explicit load and unload, and `/chat`: one input turn through the shared
pipeline (and the tool loop, with MCP `integrations`: v1_tools.py), stateful through
`previous_response_id`, answered whole or as LM Studio's named events (v1_reply.py).
Errors before a reply starts are the server's usual (OpenAI-shaped) errors; one during a stream
is an `error` event followed by `chat.end`, as LM Studio documents."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag
from quart import Blueprint, request

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.http.sse import sse_response
from mlxserve.api.lmstudio import v1_models
from mlxserve.api.lmstudio.answers import (
    V1ChatResult,
    V1LoadConfig,
    V1LoadResult,
    V1ModelList,
    V1UnloadResult,
)
from mlxserve.api.lmstudio.load import LoadOptions, load_instance
from mlxserve.api.lmstudio.v1_reply import ChatReply
from mlxserve.api.lmstudio.v1_tools import open_integrations
from mlxserve.api.shared.protocol import (
    MinP,
    OpenAIModel,
    RepeatPenalty,
    Temperature,
    TopK,
    TopP,
    sampling_params,
)
from mlxserve.api.state import server_state
from mlxserve.mcp.loop import start_tool_loop
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.deadline import deadline_from_now, until_deadline
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints, GenerateRequest, ImagePart, TextPart, Turn
from mlxserve.sampling.params import SamplingParams

blueprint = Blueprint("lmstudio_v1", __name__, url_prefix="/api/v1")
# LM Studio's `reasoning` setting as the effort chat templates take ("on": the model's default)
REASONING_EFFORT = {"off": "none", "low": "low", "medium": "medium", "high": "high"}


class ModelLoadRequest(LoadOptions):
    model: str
    echo_load_config: bool = False


class ModelUnloadRequest(OpenAIModel):
    instance_id: str


class ChatTextInput(OpenAIModel):
    type: Literal["message", "text"]  # the reference names "message"; its image example, "text"
    content: str


class ChatImageInput(OpenAIModel):
    type: Literal["image"]
    data_url: str


InputItem = Annotated[ChatTextInput | ChatImageInput, Field(discriminator="type")]
# A string, or a list of items: the value's own type picks the branch, so an error names only it.
ChatInput = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[InputItem], Field(min_length=1), Tag("items")],
    Discriminator(lambda value: "text" if isinstance(value, str) else "items"),
]


class ChatRequest(OpenAIModel):
    model: str
    input: ChatInput
    system_prompt: str | None = None
    integrations: list[Any] | None = None
    # mlxserve's, as on /v1/responses: whether (and how many) integrations' tools are called
    tool_choice: Literal["auto", "none", "required"] = "auto"
    parallel_tool_calls: bool = True
    stream: bool = False
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: Literal["off", "low", "medium", "high", "on"] | None = None
    context_length: int | None = Field(None, ge=1)  # for the load this request causes, if any
    store: bool = True
    previous_response_id: str | None = Field(None, pattern="^resp_")
    # mlxserve's, as in /api/v0
    ttl: int | None = Field(None, gt=0)
    seed: int | None = None

    def to_sampling_params(self) -> SamplingParams:
        fields = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"}
        return sampling_params(**self.model_dump(include=fields))


@blueprint.get("/models")
@answers(V1ModelList)
async def list_models():
    """Every model in the store, with its capabilities and loaded instances."""
    registry = server_state().registry
    instances = list(registry.loaded.values())  # taken on the event loop; files are read off it
    models = await asyncio.to_thread(v1_models.v1_models, registry, instances)
    return V1ModelList(models=models).as_dict()


@blueprint.post("/models/load")
@answers(V1LoadResult)
@with_body(ModelLoadRequest)
async def load_model(body: ModelLoadRequest):
    """Load a model; the instance takes the model's key as its id unless `identifier` names one."""
    outcome = await load_instance(server_state().registry, body.model, body)
    loaded = outcome.loaded
    result = V1LoadResult(
        type=v1_models.model_type(loaded.record),
        instance_id=loaded.identifier,
        load_time_seconds=round(outcome.seconds, 3),
        status="loaded",
    )
    if body.echo_load_config:
        result.load_config = V1LoadConfig(context_length=loaded.engine.context_length)
    return result.as_dict()


@blueprint.post("/models/unload")
@answers(V1UnloadResult)
@with_body(ModelUnloadRequest)
async def unload_model(body: ModelUnloadRequest):
    """Unload one loaded instance."""
    registry = server_state().registry
    if body.instance_id not in registry.loaded:
        message = f"no loaded instance with id '{body.instance_id}'"
        raise RequestError(404, message, "instance_id", "model_not_found")
    await registry.unload(body.instance_id)
    return V1UnloadResult(instance_id=body.instance_id).as_dict()


@blueprint.post("/chat")
@answers(V1ChatResult)
@with_body(ChatRequest)
async def chat(body: ChatRequest):
    """Chat with a model: output items and stats, or LM Studio's stream of named events."""
    state = server_state()
    store = state.lmstudio_chats
    history = store.conversation(body.previous_response_id) if body.previous_response_id else []
    conversation = with_system_prompt(history, body.system_prompt) + [input_turn(body.input)]
    seconds = state.limits.request_timeout
    deadline, toolbox = deadline_from_now(seconds), None
    if body.integrations:
        async with until_deadline(deadline, seconds):
            toolbox = await open_integrations(state.mcp_servers, body.integrations)
    try:
        load_seconds = await _load_for_chat(state.registry, body)
        neutral = GenerateRequest(
            model=body.model,
            sampling=body.to_sampling_params(),
            conversation=conversation,
            max_tokens=body.max_output_tokens,
            constraints=Constraints(
                tools=toolbox.chat_functions() if toolbox else [],
                tool_choice=body.tool_choice,
                parallel_tool_calls=body.parallel_tool_calls,
            ),
            ttl=body.ttl,
            prompt_param="input",
            reasoning_effort=REASONING_EFFORT.get(body.reasoning),
            response_id=f"resp_{secrets.token_hex(24)}",
            endpoint=request.path,
        )
        loop = await start_tool_loop(
            state.registry, state.limits, neutral, toolbox, deadline=deadline
        )
    except BaseException:
        if toolbox is not None:
            await toolbox.close()
        raise
    stored_as = neutral.response_id if body.store else None
    reply = ChatReply(loop.prepared.model, stored_as, load_seconds, conversation, store, loop)
    events = reply.events(loop.events())
    if body.stream:
        streamed = reply.in_band_errors(events)
        return await sse_response(streamed, done_marker=False, named_events=True)
    async for event in events:
        last = event
    return last["result"]


def with_system_prompt(history: list[Turn], system_prompt: str | None) -> list[Turn]:
    """A continued chat keeps its system prompt; a request that sends one replaces it."""
    if system_prompt is None:
        return history
    rest = [turn for turn in history if turn.role != "system"]
    return [Turn("system", [TextPart(system_prompt)]), *rest]


def input_turn(value: str | list[ChatTextInput | ChatImageInput]) -> Turn:
    """The input is one user message: its text, or its text and image parts."""
    if isinstance(value, str):
        return Turn("user", [TextPart(value)])
    parts = [
        TextPart(item.content) if isinstance(item, ChatTextInput) else ImagePart(item.data_url)
        for item in value
    ]
    return Turn("user", parts)


async def _load_for_chat(registry: ModelRegistry, body: ChatRequest) -> float | None:
    """Load a stored model that is not loaded yet (as any request would) with the request's
    `context_length`, timed for the model_load events; None when there was nothing to load."""
    if body.model in registry.loaded or body.model in registry.loading:
        return None
    started = time.monotonic()
    loaded = await registry.load_on_request(
        body.model, ttl=body.ttl, context_length=body.context_length
    )
    return None if loaded is None else round(time.monotonic() - started, 3)
