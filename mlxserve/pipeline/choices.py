"""Several choices in one request (OpenAI's `n`, and a list of prompts): each prompt prepared
once, copied for its n choices, every choice its own engine request counted into the model's
queue, all generated at once and their events tagged with the choice's index (prompt-major)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing

from mlxserve.engine.base import GenerationStats
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.events import Completion, OutputEvent
from mlxserve.pipeline.generate import generate
from mlxserve.pipeline.prepare import Prepared, ServerLimits, prepare
from mlxserve.pipeline.request import GenerateRequest

MAX_CHOICES = 8  # `n` per prompt: more would let one request crowd out the others


async def prepare_choices(
    registry: ModelRegistry,
    requests: list[GenerateRequest],
    n: int,
    limits: ServerLimits,
) -> list[Prepared]:
    """The n choices of each request, in order; with a seed, choice i samples with seed + i.
    A queue too full for all of them refuses the whole request (429)."""
    if not 1 <= n <= MAX_CHOICES:
        message = f"n must be in [1, {MAX_CHOICES}], got {n}"
        raise RequestError(400, message, "n", "invalid_value")
    choices: list[Prepared] = []
    try:
        for request in requests:
            first = await prepare(registry, request, limits)
            choices += [first, *(_another_choice(first, offset) for offset in range(1, n))]
    except BaseException:
        for choice in choices:
            choice.release()
        raise
    return choices


def _another_choice(first: Prepared, offset: int) -> Prepared:
    """A copy of a prepared choice that samples on its own: the rendered and tokenized prompt,
    images and grammar are shared."""
    sampling = first.engine_request.sampling
    if sampling.seed is not None:
        sampling = dataclasses.replace(sampling, seed=sampling.seed + offset)
    choice = dataclasses.replace(
        first,
        engine_request=dataclasses.replace(first.engine_request, sampling=sampling),
        release=first.loaded.admit(),
        reasoning=copy.copy(first.reasoning),  # still fresh: no reply has been read yet
    )
    weakref.finalize(choice, choice.release)
    return choice


async def generate_choices(choices: list[Prepared]) -> AsyncIterator[tuple[int, OutputEvent]]:
    """Every choice's events as they come, with its index; closing this stops every choice."""
    arrived: asyncio.Queue = asyncio.Queue()

    async def run(index: int, choice: Prepared) -> None:
        try:
            async with aclosing(generate(choice)) as events:
                async for event in events:
                    arrived.put_nowait((index, event))
        except Exception as exc:  # noqa: BLE001 - raised where the events are read
            arrived.put_nowait((index, exc))
        else:
            arrived.put_nowait((index, None))

    tasks = [asyncio.create_task(run(index, choice)) for index, choice in enumerate(choices)]
    try:
        running = len(tasks)
        while running:
            index, item = await arrived.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                running -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def complete_choices(choices: list[Prepared]) -> list[Completion]:
    """Every choice's whole answer, generated together."""
    completions = [Completion() for _ in choices]
    async with aclosing(generate_choices(choices)) as events:
        async for index, event in events:
            completions[index].add(event)
    return completions


def combined_stats(stats: list[GenerationStats], n: int) -> GenerationStats:
    """One request's figures: each prompt counted once (its first choice's), every choice's
    completion; the timings are the first choice's."""
    prompts = stats[::n]
    return dataclasses.replace(
        stats[0],
        prompt_tokens=sum(s.prompt_tokens for s in prompts),
        cached_prompt_tokens=sum(s.cached_prompt_tokens for s in prompts),
        completion_tokens=sum(s.completion_tokens for s in stats),
        reasoning_tokens=sum(s.reasoning_tokens for s in stats),
    )
