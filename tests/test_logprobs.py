"""Token log-probabilities on /v1/chat/completions and /v1/completions, whole and streamed, on
both engines with the real Gemma model: each token's bytes make up the reply, greedy sampling
picks the likeliest token, the alternatives form part of one distribution, and MLX and llama.cpp
give the same figures within their formats' precision.

MLX reports the distribution sampled from after logit_bias and penalties (its default repeat
penalty included); llama.cpp the model's own, before them: there the greedy token is the
likeliest only without a penalty."""

from __future__ import annotations

import math

import openai
import pytest

ASK = [{"role": "user", "content": "Name a colour."}]
GREEDY = {"temperature": 0, "max_tokens": 4}
TOP = 3


def chat_logprobs(client, model: str, stream: bool, **extra):
    answer = client.chat.completions.create(
        model=model,
        messages=ASK,
        logprobs=True,
        top_logprobs=TOP,
        stream=stream,
        **GREEDY,
        **extra,
    )
    if not stream:
        choice = answer.choices[0]
        return choice.message.content, choice.logprobs.content
    text, entries = "", []
    for chunk in answer:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            entries += chunk.choices[0].logprobs.content
    return text, entries


def check_distribution(entry) -> None:
    """The sampled (greedy) token is the likeliest; the alternatives are one distribution's."""
    tops = entry.top_logprobs
    assert len(tops) == TOP
    assert tops[0].token == entry.token and math.isclose(tops[0].logprob, entry.logprob)
    assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
    assert all(t.logprob <= 0 for t in tops)
    assert sum(math.exp(t.logprob) for t in tops) <= 1 + 1e-5


def penalty_for(server) -> dict:
    return {} if server.engine == "mlx" else {"extra_body": {"repeat_penalty": 1.0}}


def test_chat_logprobs_whole_and_streamed(server, client, model_id):
    text, entries = chat_logprobs(client, model_id, stream=False, **penalty_for(server))
    assert len(entries) >= 1
    assert b"".join(bytes(e.bytes) for e in entries).decode() == text
    for entry in entries:
        check_distribution(entry)
    streamed_text, streamed = chat_logprobs(client, model_id, stream=True, **penalty_for(server))
    assert streamed_text == text
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in entries
    ]


def test_completions_logprobs_in_the_legacy_shape(server, client, model_id):
    answer = client.completions.create(
        model=model_id, prompt="The sky is", logprobs=2, **GREEDY, **penalty_for(server)
    )
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    offsets = [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets
    for token, value, alternatives in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(alternatives) == 2 and max(alternatives.values()) == pytest.approx(value)
        assert alternatives[token] == pytest.approx(value)
    chunks = client.completions.create(
        model=model_id,
        prompt="The sky is",
        logprobs=2,
        stream=True,
        **GREEDY,
        **penalty_for(server),
    )
    pieces = [chunk.choices[0].logprobs for chunk in chunks]
    assert [token for piece in pieces if piece for token in piece.tokens] == logprobs.tokens
    assert [o for piece in pieces if piece for o in piece.text_offset] == logprobs.text_offset


def test_logprobs_are_refused_where_they_cannot_be_given(client, model_id):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model_id, messages=ASK, top_logprobs=2, **GREEDY)
    assert refused.value.body["param"] == "top_logprobs"
    plain = client.chat.completions.create(model=model_id, messages=ASK, **GREEDY)
    assert plain.choices[0].logprobs is None


def test_mlx_and_llamacpp_agree(server, default_ids, gemma_llamacpp):
    """The MLX model is the GGUF's weights converted: the same greedy tokens, and
    log-probabilities as close as llama.cpp's 4-bit arithmetic allows. Without a repeat penalty:
    llama.cpp reports the model's own distribution, before penalties."""
    if server.engine != "mlx":
        pytest.skip("compared once, from the MLX server's side")
    mlx = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k", max_retries=0)
    unpenalized = {"extra_body": {"repeat_penalty": 1.0}}
    _, ours = chat_logprobs(mlx, default_ids["mlx"], stream=False, **unpenalized)
    peer = openai.OpenAI(base_url=f"{gemma_llamacpp.base_url}/v1", api_key="k", max_retries=0)
    _, theirs = chat_logprobs(peer, default_ids["llamacpp"], stream=False, **unpenalized)
    assert [e.token for e in ours] == [e.token for e in theirs], (ours, theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a.logprob - b.logprob) < 0.1, (a, b)


def test_responses_include_the_texts_logprobs(server, client, model_id):
    asked = {
        "model": model_id,
        "input": "Name a colour.",
        "temperature": 0,
        "max_output_tokens": 4,
        "top_logprobs": 2,
        "include": ["message.output_text.logprobs"],
    }
    answer = client.responses.create(**asked)
    text = answer.output[-1].content[0]
    assert len(text.logprobs) >= 1
    assert b"".join(bytes(e.bytes) for e in text.logprobs).decode() == text.text
    assert all(len(entry.top_logprobs) == 2 for entry in text.logprobs)
    if server.engine == "mlx":  # Responses has no repeat_penalty: llama.cpp's default applies
        assert all(entry.top_logprobs[0].token == entry.token for entry in text.logprobs)
    deltas = [e for e in client.responses.create(**asked, stream=True) if "text.delta" in e.type]
    assert [lp.token for e in deltas for lp in e.logprobs] == [e.token for e in text.logprobs]
    unasked = {k: v for k, v in asked.items() if k != "include"}
    assert client.responses.create(**unasked).output[-1].content[0].logprobs == []
