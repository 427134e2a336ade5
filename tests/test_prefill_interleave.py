"""A long new prompt is read a chunk at a time between decode steps: a stream already decoding
keeps getting tokens while it is prefilled, and both answers are what each gives alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.prompt_reading import PREFILL_CHUNK
from mlxserve.sampling.params import SamplingParams
from tests.tiny_models import make_tiny_gemma

NO_EOS = SamplingParams(temperature=0, logit_bias={2: -100})  # the tiny vocabulary's <eos>
LONG_PROMPT = "the quick brown fox jumps over the lazy dog. " * 80  # 3,600 byte tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "test" / "bytes"
    make_tiny_gemma(directory, bytes_vocabulary=True)
    return directory


async def collect(model: MLXModel, prompt: str, max_tokens: int, arrivals: list | None = None):
    request = EngineRequest(prompt=prompt, sampling=NO_EOS, max_tokens=max_tokens)
    text = []
    async for event in model.generate(request):
        if event.token_ids and arrivals is not None:  # a byte may wait for the rest of its text
            arrivals.extend([time.perf_counter()] * len(event.token_ids))
        text.append(event.text)
    return "".join(text)


async def interleaved_run(model_dir: Path) -> dict:
    model = await MLXModel.load(model_dir, 4096, prompt_cache_bytes=0)  # every prompt read whole
    try:
        alone_a = await collect(model, "hello", 400)
        alone_b = await collect(model, LONG_PROMPT, 4)
        before = await model.engine_counters()
        arrivals: list[float] = []
        stream_a = asyncio.create_task(collect(model, "hello", 400, arrivals))
        while len(arrivals) < 5:
            await asyncio.sleep(0.001)
        submitted = time.perf_counter()
        b_arrivals: list[float] = []
        together_b = await collect(model, LONG_PROMPT, 4, b_arrivals)
        together_a = await stream_a
        after = await model.engine_counters()
    finally:
        await model.close()
    during = [t for t in arrivals if submitted <= t <= b_arrivals[0]]
    gaps = [b - a for a, b in zip([submitted, *during], [*during, b_arrivals[0]], strict=True)]
    return {
        "alone": (alone_a, alone_b),
        "together": (together_a, together_b),
        "tokens_during_prefill": len(during),
        "prefill_seconds": b_arrivals[0] - submitted,
        "worst_gap": max(gaps),
        "chunks": after["prefill_chunks"] - before["prefill_chunks"],
        "max_chunks_between_decodes": after["max_prefill_chunks_between_decodes"],
    }


def test_prefill_interleaves_with_a_running_stream(model_dir):
    run = asyncio.run(interleaved_run(model_dir))
    assert run["together"] == run["alone"]
    chunks = len(LONG_PROMPT) // PREFILL_CHUNK
    assert run["chunks"] >= chunks
    assert run["max_chunks_between_decodes"] == 1  # never two chunks without a decode step
    assert run["tokens_during_prefill"] >= chunks - 1  # a token for the stream between chunks
    # Read whole, the prompt would leave one gap as long as its prefill; the margin is wide
    # because a busy two-core machine can stall any one step.
    assert run["worst_gap"] < run["prefill_seconds"] / 2


def test_a_burst_of_short_prompts_is_read_in_one_pass(model_dir):
    """Six new chats at once: their prompts (of different lengths) are read together, left-padded,
    and each answer is the one it gets alone."""
    prompts = [f"question {i}: " + "why? " * i for i in range(6)]

    async def scenario():
        model = await MLXModel.load(model_dir, 4096, prompt_cache_bytes=0)
        try:
            alone = [await collect(model, prompt, 12) for prompt in prompts]
            before = await model.engine_counters()
            together = await asyncio.gather(*[collect(model, prompt, 12) for prompt in prompts])
            after = await model.engine_counters()
        finally:
            await model.close()
        return alone, list(together), after["prefill_chunks"] - before["prefill_chunks"]

    alone, together, passes = asyncio.run(scenario())
    assert together == alone
    assert passes <= 2  # a prompt read alone takes one pass or more each
