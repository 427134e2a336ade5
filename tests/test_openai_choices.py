"""Several choices in one request through the official openai client on a real server, on both
engines: `n` on chat and text completions, and a list of prompts on /v1/completions."""

from __future__ import annotations

import time

import openai
import pytest

from tests.log_stream import log_records


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Name a colour."}]
# Gemma's end-of-text and end-of-turn tokens, kept from ending a reply that must run on.
NO_END = {"1": -100, "106": -100}
# Why sampled text is compared on MLX only: llama.cpp's logits depend on which slots decode
# together and what each slot had cached, which two runs need not share.
LLAMACPP_SUMS = "llama.cpp's sampled replies depend on its slots' state"


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


@pytest.fixture
def model(server) -> str:
    return server.model_id


def chat(client, model, **fields):
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=4, **fields)


def streamed_texts(chunks) -> tuple[dict[int, str], dict[int, str], list]:
    """Each choice's text and finish reason by index, and the usage chunks."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    usages = []
    for chunk in chunks:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            texts[choice.index] = texts.get(choice.index, "") + (piece or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, usages


def test_n_greedy_choices_equal_the_single_answer(client, model, server):
    alone = chat(client, model, temperature=0)
    three = chat(client, model, temperature=0, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage.prompt_tokens == alone.usage.prompt_tokens
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens
    if server.engine != "mlx":
        pytest.skip(LLAMACPP_SUMS)  # greedy too, at a near tie
    assert {c.message.content for c in three.choices} == {alone.choices[0].message.content}
    assert three.usage.completion_tokens == 3 * alone.usage.completion_tokens


def test_n_seeded_choices_differ_and_repeat(client, model, server):
    first = chat(client, model, temperature=1, seed=11, n=3)
    texts = [c.message.content for c in first.choices]
    assert len(set(texts)) > 1
    if server.engine != "mlx":
        pytest.skip(LLAMACPP_SUMS)
    again = chat(client, model, temperature=1, seed=11, n=3)
    assert texts == [c.message.content for c in again.choices]
    # Choice i samples with seed + i: the third is what seed 13 gives alone.
    alone = chat(client, model, temperature=1, seed=13)
    assert texts[2] == alone.choices[0].message.content


def test_n_streamed_equals_whole(client, model, server):
    whole = chat(client, model, n=3, temperature=1, seed=5)
    options = {"include_usage": True}
    chunks = chat(client, model, n=3, temperature=1, seed=5, stream=True, stream_options=options)
    texts, reasons, usages = streamed_texts(chunks)
    assert sorted(texts) == sorted(reasons) == [0, 1, 2]
    assert len(usages) == 1 and usages[0].prompt_tokens == whole.usage.prompt_tokens
    if server.engine != "mlx":
        pytest.skip(LLAMACPP_SUMS)
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert usages[0].completion_tokens == whole.usage.completion_tokens


def complete(client, model, prompt, **fields):
    return client.completions.create(
        model=model, prompt=prompt, max_tokens=4, temperature=0, **fields
    )


def test_prompt_list_answers_prompt_major(client, model, server):
    prompts = ["The sky is", "One, two,"]
    alone = [complete(client, model, p) for p in prompts]
    listed = complete(client, model, prompts, n=2)
    assert [c.index for c in listed.choices] == [0, 1, 2, 3]
    assert listed.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    texts, reasons, _ = streamed_texts(complete(client, model, prompts, n=2, stream=True))
    assert sorted(texts) == sorted(reasons) == [0, 1, 2, 3]
    if server.engine != "mlx":
        pytest.skip(LLAMACPP_SUMS)  # greedy too, at a near tie
    expected = [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert [c.text for c in listed.choices] == expected
    assert listed.usage.completion_tokens == 2 * sum(a.usage.completion_tokens for a in alone)
    assert texts == dict(enumerate(expected))
    assert reasons == {c.index: c.finish_reason for c in listed.choices}


def test_prompt_list_of_token_ids(client, model, server):
    prompts = [[2, 651, 7217, 603], [2, 4038, 235269, 1378]]
    alone = [complete(client, model, p) for p in prompts]
    listed = complete(client, model, prompts)
    assert listed.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    if server.engine != "mlx":
        pytest.skip(LLAMACPP_SUMS)  # greedy too, at a near tie
    assert [c.text for c in listed.choices] == [a.choices[0].text for a in alone]


def test_n_over_the_limit_is_refused(client, model):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client, model, n=9, stream=stream)
        assert caught.value.body["param"] == "n" and "n must be in [1, 8]" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, model, ["a", "b"], n=0)
    assert caught.value.body["param"] == "n"


def active_requests(server) -> int:
    return server.health()["active_requests"]


def test_n_choices_count_in_the_queue_and_leave_with_the_client(client, model, server):
    chunks = client.completions.create(
        model=model, prompt="Count:", n=3, max_tokens=2000, logit_bias=NO_END, stream=True
    )
    next(iter(chunks))  # generating
    assert active_requests(server) == 3
    chunks.close()
    deadline = time.monotonic() + 10
    while active_requests(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active_requests(server) == 0


def test_n_choices_of_a_long_prompt_read_it_once(client, model, server):
    if server.engine != "mlx":
        pytest.skip("llama.cpp's slots each read the prompt")
    # Past one prefill chunk (so the choices are read one after another, not in one batch) and
    # within the sliding window (so a cached prompt can be trimmed to a prefix).
    prompt = " ".join(f"item {i}" for i in range(45))
    records, _ = log_records(server, "response", 3, lambda: complete(client, model, prompt, n=3))
    cached = sorted(record["stats"]["cached_prompt_tokens"] for record in records)
    prompt_tokens = records[0]["stats"]["prompt_tokens"]
    assert cached[0] < prompt_tokens // 2  # the first read it
    # The others took it from the cache, but for the last token or two, read again.
    assert all(count >= prompt_tokens - 2 for count in cached[1:])
