"""The MLX engine on a tiny random model: continuous batching, cancellation, prompt cache."""

from __future__ import annotations

import asyncio

import mlx.core as mx
import pytest

from mlxserve.engine.base import ContextLengthExceeded, EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.step_profile import PHASES, StepProfile
from mlxserve.sampling.params import SamplingParams
from tests.tiny_models import make_tiny_gemma

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias={2: -100.0})  # no EOS
LONG = 200  # tokens: long enough that the others join while the first still decodes
PROMPTS = ["w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15", "w20 w21", "w30 w31 w32 w33 w34"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_gemma(tmp_path_factory.mktemp("tiny"))


def run(coro):
    return asyncio.run(coro)


async def collect(model: MLXModel, prompt, max_tokens=12, **kwargs):
    request = EngineRequest(
        prompt=prompt, sampling=kwargs.pop("sampling", GREEDY), max_tokens=max_tokens, **kwargs
    )
    text, stats = "", None
    async for event in model.generate(request):
        text += event.text
        stats = event.stats or stats
    return text, stats


async def one_at_a_time(record, prompts, **kwargs):
    model = await MLXModel.load(record.directory, 512, max_batch_size=1)
    try:
        return [await collect(model, p, **kwargs) for p in prompts]
    finally:
        await model.close()


def test_batched_generation_equals_one_at_a_time(tiny):
    async def batched():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            first = asyncio.ensure_future(collect(model, PROMPTS[0], max_tokens=LONG))
            while (await model.engine_counters())["decoding"] == 0:
                await asyncio.sleep(0.001)
            rest = [collect(model, p, max_tokens=LONG) for p in PROMPTS[1:]]
            results = await asyncio.gather(first, *rest)
            # the others joined the batch the first was decoding in
            assert (await model.engine_counters())["joined_running_batch"] == len(PROMPTS) - 1
            return results
        finally:
            await model.close()

    sequential = run(one_at_a_time(tiny, PROMPTS, max_tokens=LONG))
    together = run(batched())
    assert [text for text, _ in together] == [text for text, _ in sequential]
    counts = [(s.completion_tokens, s.stop_reason) for _, s in together]
    assert counts == [(s.completion_tokens, s.stop_reason) for _, s in sequential]


def test_max_tokens_and_stop_strings(tiny):
    async def scenario():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            text, stats = await collect(model, PROMPTS[1], max_tokens=7)
            assert stats.completion_tokens == 7 and stats.finish_reason == "length"
            stop = text.split()[3]
            cut, cut_stats = await collect(model, PROMPTS[1], max_tokens=7, stop=[stop])
            assert cut == text[: text.index(stop)]
            assert cut_stats.stop_reason == "stopStringFound"
        finally:
            await model.close()

    run(scenario())


def test_closing_the_stream_cancels_within_a_step(tiny):
    async def scenario():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            stream = model.generate(
                EngineRequest(prompt=PROMPTS[0], sampling=GREEDY, max_tokens=400)
            )
            await stream.__anext__()
            await stream.aclose()
            for _ in range(100):
                if model.active_sequences == 0:
                    return
                await asyncio.sleep(0.01)
            pytest.fail("the runner kept decoding a cancelled sequence")
        finally:
            await model.close()

    run(scenario())


def test_prompt_cache_reuses_a_shared_prefix(tiny):
    async def scenario():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            first, _ = await collect(model, PROMPTS[0], max_tokens=5)
            follow_up = f"{PROMPTS[0]} {first} w40 w41"  # a second turn extends the first
            return follow_up, await collect(model, follow_up, max_tokens=5)
        finally:
            await model.close()

    follow_up, (text, stats) = run(scenario())
    assert stats.cached_prompt_tokens >= len(PROMPTS[0].split())
    [(uncached, uncached_stats)] = run(one_at_a_time(tiny, [follow_up], max_tokens=5))
    assert uncached_stats.cached_prompt_tokens == 0
    assert text == uncached


def test_prompt_cache_stays_within_its_byte_bound(tiny):
    async def cached_bytes(limit: int) -> tuple[int, int]:
        model = await MLXModel.load(tiny.directory, 512, prompt_cache_bytes=limit)
        try:
            first, _ = await collect(model, PROMPTS[0], max_tokens=4)
            for prompt in PROMPTS[1:]:
                await collect(model, prompt, max_tokens=4)
            held = model.prompt_cache_bytes
            _, stats = await collect(model, f"{PROMPTS[0]} {first} w40", max_tokens=1)
            return held, stats.cached_prompt_tokens
        finally:
            await model.close()

    unbounded, reused = run(cached_bytes(2**40))
    assert unbounded > 0 and reused > 0
    bounded, reused = run(cached_bytes(unbounded // 3))
    assert 0 < bounded <= unbounded // 3
    assert reused == 0  # the first prompt's state was evicted to stay within the bound


def test_a_prompt_that_fills_the_context_is_rejected(tiny):
    async def scenario():
        model = await MLXModel.load(tiny.directory, 8)
        try:
            with pytest.raises(ContextLengthExceeded):
                await collect(model, " ".join(f"w{i}" for i in range(10)))
            text, stats = await collect(model, "w1 w2", max_tokens=None)
            assert stats.completion_tokens == 6 and stats.finish_reason == "length"
        finally:
            await model.close()

    run(scenario())


def test_same_seed_same_text(tiny):
    sampling = SamplingParams(temperature=1.5, top_k=0, top_p=1, min_p=0, seed=11)
    a, b = (run(one_at_a_time(tiny, [PROMPTS[1]], sampling=sampling))[0][0] for _ in range(2))
    assert a == b


def test_visible_special_tokens_keep_their_text(tiny):
    """A special token's text is left out, unless the request names it (a thinking model's
    channel markers must reach the reasoning splitter)."""
    forced = SamplingParams(temperature=0, logit_bias={2: -100.0, 3: 100.0})  # always <unk>

    async def both():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            hidden = await collect(model, "w1 w2", max_tokens=2, sampling=forced)
            shown = await collect(
                model, "w1 w2", max_tokens=2, sampling=forced, visible_specials=("<unk>",)
            )
            return hidden, shown
        finally:
            await model.close()

    (hidden, stats), (shown, _) = run(both())
    assert stats.completion_tokens == 2 and hidden == ""
    assert shown == "<unk><unk>"


def test_memory_bounds_the_batch_by_the_tokens_each_sequence_may_hold(tiny):
    """Each sequence counts its prompt and its longest reply against the KV budget: with room
    for two such sequences, four requests decode two at a time, with the same answers."""
    prompts = [f"w{n} w{n + 1} w{n + 2} w{n + 3}" for n in (40, 50, 60, 70)]

    async def longest_tokens():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            return max([len(await model.tokenize(p)) for p in prompts]) + 24
        finally:
            await model.close()

    longest = run(longest_tokens())

    async def together(budget):
        model = await MLXModel.load(tiny.directory, 512, kv_budget_tokens=budget)
        try:
            results = await asyncio.gather(*(collect(model, p, max_tokens=24) for p in prompts))
            return [text for text, _ in results], (await model.engine_counters())["most_decoding"]
        finally:
            await model.close()

    bounded, most_bounded = run(together(2 * longest + 1))
    free, most_free = run(together(None))
    assert (most_bounded, most_free) == (2, 4)
    assert bounded == free == [text for text, _ in run(one_at_a_time(tiny, prompts, max_tokens=24))]


def test_a_client_that_reads_late_holds_its_text_not_an_event_per_token(tiny):
    """The runner never waits for a reader; what a slow one has not read is merged, so it holds
    one event with the reply's text however many tokens were decoded meanwhile."""

    async def scenario():
        model = await MLXModel.load(tiny.directory, 512)
        try:
            prompt_read_at_once = await collect(model, PROMPTS[0], max_tokens=60)
            request = EngineRequest(prompt=PROMPTS[0], sampling=GREEDY, max_tokens=60)
            stream = model.generate(request)
            first = await anext(stream)
            while (await model.engine_counters())["sequences"]:  # the runner is done with it
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # the events it handed over last join the queue
            rest = [event async for event in stream]
            return prompt_read_at_once, first, rest
        finally:
            await model.close()

    (text, stats), first, rest = run(scenario())
    assert len(rest) == 1 and rest[0].is_final
    assert first.text + rest[0].text == text
    assert len(first.token_ids) + len(rest[0].token_ids) == stats.completion_tokens == 60


def test_the_step_profile_accounts_for_the_whole_step(tiny):
    """scripts/bench.py profile's figures: every decode step timed part by part, and the parts
    add up to the step's own wall time within 10%. One row has a repeat penalty, so the host
    samples it while the others' tokens are chosen on the device."""
    profile = StepProfile()
    penalized = SamplingParams(temperature=0, repeat_penalty=1.3, logit_bias={2: -100.0})

    async def batched():
        model = await MLXModel.load(tiny.directory, 512, profile=profile, sample_on="device")
        try:
            replies = [collect(model, p, max_tokens=24) for p in PROMPTS[1:]]
            host = collect(model, PROMPTS[0], max_tokens=24, sampling=penalized)
            await asyncio.gather(host, *replies)
        finally:
            await model.close()

    run(batched())
    summary = profile.summary()
    assert summary["steps"] >= 23 and summary["mean_batch"] > 1
    timed = [name for name, ms in summary["phases_ms"].items() if ms > 0]
    assert timed == list(PHASES)
    assert abs(summary["phases_sum_ms"] - summary["step_ms"]) <= 0.1 * summary["step_ms"]


def test_an_unloaded_model_leaves_no_memory_behind(tiny):
    """After close, MLX's active memory and its pool of freed buffers are back where they were
    before the load, though the closed model object is still referenced."""

    async def scenario():
        mx.clear_cache()
        before = mx.get_active_memory(), mx.get_cache_memory()
        model = await MLXModel.load(tiny.directory, 512)
        await collect(model, PROMPTS[0], max_tokens=20)
        loaded = mx.get_active_memory()
        await model.close()
        return before, loaded, (mx.get_active_memory(), mx.get_cache_memory()), model

    before, loaded, after, _still_held = run(scenario())
    held = loaded - before[0]  # the weights and the prompt cache
    assert after[0] - before[0] < held / 100 and after[1] - before[1] < held / 100
