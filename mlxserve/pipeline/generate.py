"""Running a prepared generation: the engine's token stream, within the server's time limit,
through the output stage, with the model marked busy (so it is not unloaded mid-request) until
the request ends, and every generation in the request log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from mlxserve import logstream
from mlxserve.pipeline.constraints import output_checks
from mlxserve.pipeline.deadline import within_deadline
from mlxserve.pipeline.echo import echoed_prompt, prompt_only
from mlxserve.pipeline.events import Completion, LogprobsOfText, OutputEvent, fold
from mlxserve.pipeline.output import OutputStage
from mlxserve.pipeline.prepare import Prepared


async def generate(prepared: Prepared) -> AsyncIterator[OutputEvent]:
    loaded, request = prepared.loaded, prepared.request
    header = {"id": request.response_id, "model": loaded.identifier, "endpoint": request.endpoint}
    constrained = prepared.engine_request.grammar is not None
    syntax = prepared.tool_syntax
    lapses = loaded.engine.grammar_may_lapse
    checks = output_checks(request.constraints, syntax, lapses) if constrained else None
    tools = request.constraints.tools if syntax else None
    stage = OutputStage(syntax, constrained, prepared.reasoning, checks, tools)
    logprobs = LogprobsOfText()
    reasoning_tokens = 0
    try:
        if request.echo:
            yield await echoed_prompt(prepared)
        if request.max_tokens == 0:  # only an echo may ask for no new tokens
            yield prompt_only(prepared)
            return
        with logstream.GenerationLog(header, prepared.engine_request) as log_entry:
            engine_events = loaded.engine.generate(prepared.engine_request)
            timed = within_deadline(engine_events, prepared.deadline, prepared.timeout)
            async with aclosing(timed) as events:  # a client leaving stops the engine at once
                async for event in events:
                    log_entry.add(event)
                    thinking = stage.thinking
                    outputs = logprobs.attach(stage.feed(event.text), event.logprobs)
                    if thinking or stage.thinking:  # a token inside (or closing) a think block
                        reasoning_tokens += len(event.token_ids)
                    for output in outputs:
                        yield output
                    if event.stats:
                        event.stats.reasoning_tokens = reasoning_tokens
                        for output in logprobs.attach(stage.finish(event.stats), []):
                            yield output
    finally:
        prepared.release()


async def complete(prepared: Prepared) -> Completion:
    """The whole answer at once: the same events, folded."""
    return await fold(generate(prepared))
