"""Chat and text completions through the official openai SDK, on both engines, real Gemma 270M.

MLX decodes ~8 tokens/s on this CPU, so every request asks for a handful of tokens."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
from tokenizers import Tokenizer

from tests.metrics import model_metric

GREEDY = {"temperature": 0, "max_tokens": 6}
CHAT = [{"role": "user", "content": "Write one word."}]
# Gemma's turn format, as the built-in template must render the messages above.
CHAT_PROMPT = "<bos><start_of_turn>user\nWrite one word.<end_of_turn>\n<start_of_turn>model\n"


def test_models_lists_the_loaded_model(client, model_id):
    models = client.models.list().data
    assert [m.id for m in models] == [model_id]
    assert models[0].object == "model"


def test_greedy_completion_is_the_known_continuation(client, model_id):
    result = client.completions.create(model=model_id, prompt="The capital of France is", **GREEDY)
    assert result.choices[0].text.startswith(" the capital of")
    assert result.object == "text_completion"


def test_greedy_chat_is_identical_across_calls(client, model_id):
    first, second = (
        client.chat.completions.create(model=model_id, messages=CHAT, **GREEDY) for _ in range(2)
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.role == "assistant"
    assert first.object == "chat.completion"


def test_same_seed_gives_same_sampled_text(client, model_id):
    def sample(seed):
        return (
            client.completions.create(
                model=model_id,
                prompt="Once upon a time",
                temperature=1.5,
                top_p=1,
                max_tokens=6,
                seed=seed,
                extra_body={"top_k": 0, "min_p": 0},
            )
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1


def test_streamed_text_equals_non_streamed(client, model_id):
    full = client.chat.completions.create(model=model_id, messages=CHAT, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model=model_id,
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [full.choices[0].finish_reason]


def test_streamed_text_completion(client, model_id):
    chunks = list(
        client.completions.create(
            model=model_id, prompt="The capital of France is", stream=True, **GREEDY
        )
    )
    assert "".join(c.choices[0].text for c in chunks).startswith(" the capital of")
    assert chunks[-1].choices[0].finish_reason == "length"


def test_max_tokens_gives_exactly_that_many_tokens(client, model_id):
    result = client.completions.create(
        model=model_id, prompt="1, 2, 3, 4,", temperature=0, max_tokens=4
    )
    assert result.usage.completion_tokens == 4
    assert result.choices[0].finish_reason == "length"


def test_stop_string_truncates_output(client, model_id):
    prompt = "The capital of France is"
    text = client.completions.create(model=model_id, prompt=prompt, **GREEDY).choices[0].text
    stop = text.split()[2]  # a word in the middle of the continuation
    result = client.completions.create(model=model_id, prompt=prompt, stop=[stop, "zzz"], **GREEDY)
    assert result.choices[0].text == text[: text.index(stop)]
    assert result.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=model_id, prompt=prompt, stop=stop, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].text for c in streamed) == text[: text.index(stop)]


def test_prompt_tokens_match_the_templated_prompt(client, model_id, models_dir, default_ids):
    tokenizer = Tokenizer.from_file(str(Path(models_dir) / default_ids["mlx"] / "tokenizer.json"))
    expected = len(tokenizer.encode(CHAT_PROMPT, add_special_tokens=False).ids)
    result = client.chat.completions.create(model=model_id, messages=CHAT, max_tokens=1)
    assert result.usage.prompt_tokens == expected
    assert result.usage.completion_tokens == 1
    assert result.usage.total_tokens == expected + 1


def test_any_model_name_routes_to_the_only_loaded_model(client, model_id):
    result = client.chat.completions.create(model="whatever-name", messages=CHAT, max_tokens=1)
    assert result.model == model_id


def test_concurrent_requests_match_sequential(client, model_id):
    # Continuations without near-ties: llama.cpp's batched kernels round a little differently from
    # one sequence alone, which can flip a close greedy choice (it did for "Hello, my name is").
    prompts = ["The capital of France is", "1, 2, 3,", "Monday, Tuesday, Wednesday,"]

    def run(prompt):
        return client.completions.create(model=model_id, prompt=prompt, **GREEDY).choices[0].text

    sequential = [run(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        assert list(pool.map(run, prompts)) == sequential


def test_client_disconnect_stops_generation(server, model_id):
    body = {
        "model": model_id,
        "prompt": "Once upon a time",
        "max_tokens": 500,
        "temperature": 0,
        "stream": True,
        "logit_bias": {"1": -100, "106": -100},
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/completions", json=body, timeout=60
    ) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: "):
            pass
        assert sequences_in_engine(server, model_id) == 1
    # The engine's own count of sequences (the MLX runner's, llama.cpp's busy slots), not the
    # HTTP layer's: the generation itself stopped.
    deadline = time.monotonic() + 3
    while sequences_in_engine(server, model_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sequences_in_engine(server, model_id) == 0


def sequences_in_engine(server, model_id: str) -> float:
    return model_metric(server.base_url, "mlxserve_engine_sequences", model_id)
