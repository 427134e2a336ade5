"""Greedy rows chosen on the device, the next step built before the host has their tokens: the
same tokens as the C sampler on the real Gemma, alone and batched beside rows the host samples,
and a reply's cache kept under the tokens it really holds."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import mlx.core as mx
import numpy as np
import pytest

from mlxserve.engine.base import EngineRequest, Grammar
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.device_sampling import (
    biased,
    candidate_weights,
    device_tokens,
    penalized,
)
from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.sampler import Sampler
from tests.metrics import model_metric
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

NO_EOS = {1: -100.0, 106: -100.0}  # Gemma's end tokens, so every reply has its full length
GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias=NO_EOS)
PENALIZED = SamplingParams(temperature=0, repeat_penalty=1.3, logit_bias=NO_EOS)
SEEDED = SamplingParams(temperature=0.8, seed=7, logit_bias=NO_EOS)  # the C sampler's stream
UNSEEDED = SamplingParams(temperature=0.8, logit_bias=NO_EOS)  # drawn on the device
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
]
TOKENS = 4
# A grammar row: the host masks and samples it, whatever shares its batch.
COUNT = Grammar('start: %json {"type": "object", "properties": {"count": {"type": "integer"}}}\n')


VOCAB = 2000
WINDOW = [5, 17, 17, 300, 1999, 42]  # the last prompt tokens: a repeat penalty reaches them
# Sampled rows the device takes: each filter alone and together, a bias that bans and one that
# raises, a repeat penalty above and below 1.
SAMPLED = [
    SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1),
    SamplingParams(temperature=1.0, top_k=5, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
    SamplingParams(temperature=0.5, top_k=100, top_p=0.5, min_p=0.1, repeat_penalty=1.0),
    SamplingParams(temperature=1.3, top_k=0, top_p=1.0, min_p=0.02, repeat_penalty=0.8),
    SamplingParams(
        temperature=0.7,
        top_k=200,
        top_p=0.9,
        min_p=0.0,
        repeat_penalty=1.5,
        logit_bias={7: -100.0, 8: 3.0, 5: 2.0},
    ),  # fmt: skip
]


def row(params: SamplingParams):
    """A sequence as the device's sampling reads it: parameters and the tokens so far."""
    return SimpleNamespace(
        sampler=SimpleNamespace(params=params), prompt_tokens=WINDOW[:-2], generated=WINDOW[-2:]
    )


def c_probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    sampler = Sampler(params, VOCAB)
    sampler.feed_prompt(WINDOW)
    return sampler.probabilities(logits)


def sampled_logits() -> np.ndarray:
    """A row of logits per SAMPLED row, the window's tokens among the likely ones."""
    logits = np.random.default_rng(0).normal(0.0, 3.0, (len(SAMPLED), VOCAB)).astype(np.float32)
    logits[:, WINDOW] += 6.0
    return logits


def test_the_device_keeps_the_c_samplers_distribution():
    """Each sampled row's distribution on the device, bias, penalty and filters applied, is the
    C sampler's over the same logits, token by token."""
    logits = sampled_logits()
    sequences = [row(params) for params in SAMPLED]
    adjusted = penalized(biased(mx.array(logits), sequences), sequences, None, [False] * 5)
    for index, params in enumerate(SAMPLED):
        candidates, weights = candidate_weights(adjusted[index : index + 1], [params])
        device = np.zeros(VOCAB)
        weights = np.array(weights[0])
        np.add.at(device, np.array(candidates[0]), weights / weights.sum())
        expected = c_probabilities(logits[index], params)
        assert (expected > 0).sum() > 1  # a real draw, not one certain token
        np.testing.assert_allclose(device, expected, atol=2e-6, err_msg=str(params))


def test_a_token_the_host_has_not_seen_ends_the_repeat_window():
    """A step built ahead reads a token only the device knows: the penalty's window is the same
    as if the host had it, so the oldest token leaves the window and the new one enters."""
    logits = mx.array(sampled_logits()[:2])
    params = SamplingParams(temperature=0.8, repeat_penalty=1.5, repeat_last_n=4)
    newest = 1234
    ahead = [row(params), row(params)]
    seen = [row(params), row(params)]
    seen[0].generated = [*WINDOW[-2:], newest]
    read = mx.array([newest, 0])
    expected = penalized(logits, seen, None, [False, False])
    got = penalized(logits, ahead, read, [True, False])
    assert np.array_equal(np.array(got), np.array(expected))
    assert not np.array_equal(np.array(got[0]), np.array(got[1]))  # the windows differ


def test_device_draws_follow_that_distribution():
    """Four thousand draws per row on the device: none is a token the C sampler cannot draw, and
    their counts pass a chi-square test against its probabilities (within five standard
    deviations of the statistic's mean)."""
    draws = 4000
    for logits, params in zip(sampled_logits(), SAMPLED, strict=True):
        batch = mx.broadcast_to(mx.array(logits), (draws, VOCAB))
        tokens = np.array(device_tokens(batch, [row(params)] * draws, None, [False] * draws))
        expected = c_probabilities(logits, params)
        assert expected[tokens].min() > 0, params
        drawable = expected > 0
        counts = np.bincount(tokens, minlength=VOCAB)[drawable]
        wanted = draws * expected[drawable] / expected[drawable].sum()
        statistic = ((counts - wanted) ** 2 / wanted).sum()
        freedom = drawable.sum() - 1
        assert statistic < freedom + 5 * np.sqrt(2 * freedom), (params, statistic, freedom)


@pytest.fixture(scope="module")
def gemma(models_dir, default_ids) -> Path:
    return Path(models_dir) / default_ids["mlx"]


async def reply(model: MLXModel, request: EngineRequest) -> tuple[list[int], str, object]:
    ids, text, stats = [], "", None
    async for event in model.generate(request):
        ids += event.token_ids
        text += event.text
        stats = event.stats or stats
    return ids, text, stats


async def token_ids(model: MLXModel, request: EngineRequest) -> tuple[list[int], object]:
    ids, _, stats = await reply(model, request)
    return ids, stats


async def batched_together(model: MLXModel, requests: list[EngineRequest]) -> list:
    """The requests' replies, all queued while the runner waits on a task, so one that is slower
    to submit (a grammar compiled off the runner thread) still joins the others' batch."""
    release = threading.Event()
    held = model._runner.run_task(lambda _: release.wait(60))
    replies = [asyncio.create_task(token_ids(model, r)) for r in requests]
    while model._runner.active_count < len(requests):
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.wrap_future(held)
    return await asyncio.gather(*replies)


def request(prompt: str, sampling=GREEDY, top_logprobs=None, **options) -> EngineRequest:
    return EngineRequest(prompt, sampling, max_tokens=TOKENS, top_logprobs=top_logprobs, **options)


def test_gemma_tokens_on_every_path_alone_and_batched(gemma):
    """Asking for log-probabilities keeps a greedy row on the C sampler and changes no token:
    each prompt's C tokens, alone, are what the device chooses alone and in a batch beside rows
    the host samples (log-probabilities, a greedy repeat penalty, a grammar, a seed), which keep
    their own tokens there too. One prompt bans its own third greedy token, so the device must
    apply the bias as C does. A sampled request without a seed is drawn on the device."""

    async def scenario():
        model = await MLXModel.load(gemma, 1024, sample_on="device")

        async def on_device() -> int:
            return (await model.engine_counters())["tokens_on_device"]

        try:
            on_host = [(await token_ids(model, request(p, top_logprobs=0)))[0] for p in PROMPTS]
            banned = SamplingParams(
                temperature=0, repeat_penalty=1.0, logit_bias={**NO_EOS, on_host[2][2]: -100.0}
            )
            on_host.append((await token_ids(model, request(PROMPTS[2], banned, 0)))[0])
            host_rows = [request(PROMPTS[0], PENALIZED), request(PROMPTS[0], grammar=COUNT)]
            host_rows.append(request(PROMPTS[1], SEEDED))
            host_alone = [(await token_ids(model, r))[0] for r in host_rows]
            before = await on_device()
            alone = [(await token_ids(model, request(p)))[0] for p in PROMPTS]
            alone.append((await token_ids(model, request(PROMPTS[2], banned)))[0])
            greedy_on_device, before = await on_device() - before, await on_device()
            drawn = (await token_ids(model, request(PROMPTS[1], UNSEEDED)))[0]
            drawn_on_device = await on_device() - before
            mixed = [request(PROMPTS[0]), request(PROMPTS[1], top_logprobs=0)]
            mixed += [request(PROMPTS[2], banned), request(PROMPTS[1], UNSEEDED), *host_rows]
            batched = await batched_together(model, mixed)
            most = (await model.engine_counters())["most_decoding"]
            counts = greedy_on_device, len(drawn), drawn_on_device, most
            return on_host, host_alone, alone, [ids for ids, _ in batched], counts
        finally:
            await model.close()

    on_host, host_alone, alone, batched, counts = asyncio.run(scenario())
    # the penalty and the ban changed those replies, so their rows are real tests
    assert host_alone[0] != on_host[0]
    assert on_host[4][:2] == on_host[2][:2] and on_host[4][2] != on_host[2][2]
    assert alone == on_host
    # every token but each reply's first (sampled as its prompt ends) came from the device
    assert counts == (len(alone) * (TOKENS - 1), TOKENS, TOKENS - 1, len(batched))
    assert batched[:3] == [on_host[0], on_host[1], on_host[4]]
    assert batched[4:] == host_alone


def test_a_reply_that_ends_a_step_ahead_is_cached_under_the_tokens_it_holds(tmp_path):
    """A stop string found in a token chosen ahead: the step after it had already read that
    token, so the reply's cache holds it, and a follow-up that extends the reply is answered as
    the same follow-up without any cache."""
    tiny = make_tiny_gemma(tmp_path / "tiny")
    sampling = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias={2: -100.0})
    prompt = "w5 w6 w7 w8 w9 w10 w11"

    async def on_fresh_engine(*requests: EngineRequest) -> list[tuple[list[int], str, object]]:
        model = await MLXModel.load(tiny.directory, 512, sample_on="device")
        try:
            return [await reply(model, r) for r in requests]
        finally:
            await model.close()

    [(_, text, _)] = asyncio.run(on_fresh_engine(EngineRequest(prompt, sampling, max_tokens=12)))
    words = text.split()
    # the first word from the fourth on that no earlier word contains: the stop ends there
    end = next(i for i in range(3, len(words)) if not any(words[i] in w for w in words[:i]))
    follow_up = f"{prompt} {' '.join(words[: end + 1])} w40 w41"
    stopped = EngineRequest(prompt, sampling, max_tokens=12, stop=[words[end]])
    [(ids, _, stats), (cached, _, cached_stats)] = asyncio.run(
        on_fresh_engine(stopped, EngineRequest(follow_up, sampling, max_tokens=6))
    )
    assert stats.stop_reason == "stopStringFound" and len(ids) == end + 1
    assert cached_stats.cached_prompt_tokens >= len(prompt.split()) + end + 1
    [(fresh, _, fresh_stats)] = asyncio.run(
        on_fresh_engine(EngineRequest(follow_up, sampling, max_tokens=6))
    )
    assert fresh_stats.cached_prompt_tokens == 0
    assert cached == fresh


@pytest.mark.parametrize("sample_on", ["device", "auto"])
def test_the_server_option_says_where_tokens_are_chosen(tmp_path, sample_on):
    """`--sample-on device` takes a greedy reply's tokens on the device through the real server;
    `auto` leaves them to the C sampler on this CPU backend."""
    tiny = make_tiny_gemma(tmp_path / "test" / "tiny")
    args = ["--sample-on", sample_on]
    with ServerProcess(tmp_path, model=tiny.id, engine="mlx", extra_args=args) as server:
        body = {"model": tiny.id, "prompt": "w5 w6", "max_tokens": 6, "temperature": 0}
        body |= {"repeat_penalty": 1.0, "logit_bias": {"2": -100}}
        answer = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)
        on_device = model_metric(server.base_url, "mlxserve_engine_tokens_on_device", tiny.id)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 6
    assert on_device == (5 if sample_on == "device" else 0)
