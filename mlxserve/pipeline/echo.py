"""OpenAI's `echo`: a text completion that starts with its prompt, the prompt's tokens scored
when logprobs are asked for (how evaluation harnesses read a model's likelihood of a text)."""

from __future__ import annotations

from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.events import Finished, TextDelta
from mlxserve.pipeline.prepare import Prepared


async def echoed_prompt(prepared: Prepared) -> TextDelta:
    engine, request = prepared.loaded.engine, prepared.engine_request
    top = request.top_logprobs
    scored = await engine.prompt_logprobs(request.prompt_tokens, top) if top is not None else []
    prompt = request.prompt
    text = prompt if isinstance(prompt, str) else await engine.detokenize(prompt)
    return TextDelta(text, tuple(scored))


def prompt_only(prepared: Prepared) -> Finished:
    """The end of an echo asked for no new tokens (max_tokens 0): the prompt was the answer."""
    stats = GenerationStats(
        prompt_tokens=len(prepared.engine_request.prompt_tokens),
        completion_tokens=0,
        stop_reason="maxPredictedTokensReached",
    )
    return Finished("length", stats)
