"""Running a prepared generation: the engine's token stream through the output stage, with the
model marked busy (so it is not unloaded mid-request) and every generation in the request log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mlxserve.pipeline import logstream
from mlxserve.pipeline.events import Completion, OutputEvent, fold
from mlxserve.pipeline.output import OutputStage
from mlxserve.pipeline.prepare import Prepared


async def generate(prepared: Prepared) -> AsyncIterator[OutputEvent]:
    loaded, request = prepared.loaded, prepared.request
    header = {"id": request.response_id, "model": loaded.identifier, "endpoint": request.endpoint}
    constrained = prepared.engine_request.grammar is not None
    stage = OutputStage(prepared.tool_family, constrained)
    loaded.active_requests += 1
    try:
        with logstream.GenerationLog(header, prepared.engine_request) as log_entry:
            async for event in loaded.engine.generate(prepared.engine_request):
                log_entry.add(event)
                for output in stage.feed(event.text):
                    yield output
                if event.stats:
                    for output in stage.finish(event.stats):
                        yield output
    finally:
        loaded.active_requests -= 1


async def complete(prepared: Prepared) -> Completion:
    """The whole answer at once: the same events, folded."""
    return await fold(generate(prepared))
