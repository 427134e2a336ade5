"""OpenAI's `echo` on /v1/completions with the real Gemma model: the prompt comes back before
the reply, and with `logprobs` each prompt token is scored as evaluation harnesses read it
(lm-eval's loglikelihood request: token-id prompts, echo, logprobs 1, max_tokens 1), the same
figures mlx-lm's own forward pass gives."""

from __future__ import annotations

import httpx
import mlx.core as mx
import openai
import pytest
from tokenizers import Tokenizer

from mlxserve.models.store import find_model

PROMPT = "The capital of France is"
BOS = 2  # Gemma's
GREEDY = {"temperature": 0, "extra_body": {"repeat_penalty": 1.0}}


def test_the_prompt_comes_back_before_the_reply(client, model_id):
    plain = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=3, **GREEDY)
    echoed = client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=3, echo=True, **GREEDY
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    streamed = client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=3, echo=True, stream=True, **GREEDY
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == echoed.choices[0].text
    assert echoed.usage.completion_tokens == plain.usage.completion_tokens


def gemma_tokens(models_dir, default_ids, text: str) -> list[int]:
    directory = find_model(models_dir, default_ids["mlx"]).directory
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_a_token_id_prompt_is_echoed_as_its_text(client, model_id, models_dir, default_ids):
    ids = gemma_tokens(models_dir, default_ids, PROMPT)
    echoed = client.completions.create(model=model_id, prompt=ids, max_tokens=1, echo=True)
    assert echoed.choices[0].text.startswith(PROMPT)


def test_no_new_tokens_needs_echo(client, model_id):
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=0)
    assert refused.value.body["param"] == "max_tokens"


def mlx_lm_logprobs(model, tokens: list[int]) -> list[float]:
    """Each token's log-probability after those before it, from mlx-lm's model directly."""
    logits = model(mx.array([tokens]))[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return [logprobs[i, tokens[i + 1]].item() for i in range(len(tokens) - 1)]


def lm_eval_request(server, model: str, prompts: list[list[int]]) -> dict:
    body = {"model": model, "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1,
            "seed": 1234, "echo": True}  # fmt: skip
    return httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=300).json()


def test_prompt_tokens_are_scored_as_mlx_lm_scores_them(server, models_dir, default_ids, request):
    if server.engine != "mlx":
        refused = lm_eval_request(server, default_ids["llamacpp"], [[BOS, 651, 6037]])
        assert refused["error"]["param"] == "echo"  # llama.cpp's server cannot score a prompt
        return
    context = [BOS, *gemma_tokens(models_dir, default_ids, PROMPT)]
    continuations = [gemma_tokens(models_dir, default_ids, word) for word in (" Paris", " London")]
    prompts = [context + c for c in continuations]
    answer = lm_eval_request(server, default_ids["mlx"], prompts)
    model, _ = request.getfixturevalue("gemma_mlx_lm")
    choices = answer["choices"]
    for choice, prompt in zip(choices, prompts, strict=True):
        logprobs = choice["logprobs"]
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        assert len(logprobs["token_logprobs"]) == len(prompt) + 1  # and the token generated
        expected = mlx_lm_logprobs(model, prompt)
        assert logprobs["token_logprobs"][1 : len(prompt)] == pytest.approx(expected, abs=2e-3)
        scored = zip(logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:], strict=True)
        for value, top in scored:
            assert len(top) >= 1 and max(top.values()) >= value - 1e-6
    paris, london = (sum(c["logprobs"]["token_logprobs"][len(context) : -1]) for c in choices)
    assert paris > london


def test_scoring_a_prompt_leaves_a_running_stream_as_it_was(tmp_path):
    """A prompt is scored between two decode steps with a cache of its own: a stream decoding
    meanwhile gives the tokens it gives alone, and the scores are the same as on an idle model."""
    import asyncio

    from mlxserve.engine.base import EngineRequest
    from mlxserve.engine.mlx.model import MLXModel
    from mlxserve.sampling.params import SamplingParams
    from tests.tiny_models import make_tiny_gemma

    make_tiny_gemma(tmp_path / "tiny", bytes_vocabulary=True)
    request = {"prompt": "hello", "max_tokens": 300}
    greedy = SamplingParams(temperature=0, logit_bias={2: -100})  # <eos> banned: runs on

    async def stream(model) -> list[int]:
        tokens = []
        async for event in model.generate(EngineRequest(sampling=greedy, **request)):
            tokens += event.token_ids
        return tokens

    async def scenario():
        model = await MLXModel.load(tmp_path / "tiny", 1024, prompt_cache_bytes=0)
        try:
            scored_idle = await model.prompt_logprobs(list(range(3, 200)), 2)
            alone = await stream(model)
            running = asyncio.create_task(stream(model))
            scored = [await model.prompt_logprobs(list(range(3, 200)), 2) for _ in range(3)]
            mid_stream = not running.done()
            return alone, await running, mid_stream, scored_idle, scored
        finally:
            await model.close()

    alone, together, mid_stream, scored_idle, scored = asyncio.run(scenario())
    assert mid_stream  # the prompts were scored while the stream decoded
    assert together == alone
    idle = [entry.logprob for entry in scored_idle]
    assert idle[0] is None and len(idle) == 197
    for again in scored:
        assert [entry.logprob for entry in again][1:] == pytest.approx(idle[1:], abs=1e-5)
