"""POST /infill as llama-server answers it: the text around an editor's cursor, filled in by the
model's own fill-in-the-middle tokens; one JSON object, or with `stream` its chunks as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Blueprint, jsonify, request

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.http.sse import sse_response
from mlxserve.api.llamacpp.protocol import InfillAnswer, InfillRequest, finished
from mlxserve.api.shared.protocol import new_id
from mlxserve.api.state import server_state
from mlxserve.pipeline.events import Finished, OutputEvent, TextDelta
from mlxserve.pipeline.generate import complete, generate
from mlxserve.pipeline.prepare import prepare
from mlxserve.pipeline.request import GenerateRequest

blueprint = Blueprint("llamacpp_infill", __name__)


@blueprint.post("/infill")
@answers(InfillAnswer)
@with_body(InfillRequest)
async def infill(body: InfillRequest):
    """llama-server's fill-in-the-middle: the code between `input_prefix` and `input_suffix`."""
    state = server_state()
    neutral = GenerateRequest(
        model=body.model,
        sampling=body.to_sampling_params(),
        fill_in=body.fill_in(),
        max_tokens=body.token_limit,
        stop=body.stop,
        prompt_param="input_prefix",
        response_id=new_id("infill"),
        endpoint=request.path,
    )
    prepared = await prepare(state.registry, neutral, state.limits)
    if body.stream:
        chunks = _chunks(generate(prepared), prepared.model, body.stop)
        return await sse_response(chunks, done_marker=False)
    completion = await complete(prepared)
    return jsonify(finished(completion.text, prepared.model, completion.stats, body.stop).as_dict())


async def _chunks(
    events: AsyncIterator[OutputEvent], model: str, stops: list[str]
) -> AsyncIterator[dict]:
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                yield InfillAnswer(content=event.text, stop=False).as_dict()
            elif isinstance(event, Finished):
                yield finished("", model, event.stats, stops).as_dict()
