"""Fill-in-the-middle end to end: scripted models whose vocabularies hold Qwen2.5-Coder's and
Codestral's FIM tokens, served by the real server and asked through the `openai` SDK's
`suffix`, the `ollama` client's `suffix` and llama-server's `/infill` (httpx); each checked by
the exact prompt the model saw, read off the request log. The real default Gemma, which has no
FIM tokens, refuses `suffix` with a 400 that names the model and the field."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from tests.log_stream import rendered_prompt
from tests.scripted_models import make_scripted_model
from tests.server import ServerProcess

pytestmark = pytest.mark.e2e
QWEN = "test/qwen-coder-fim"
CODESTRAL = "test/codestral-fim"
PREFIX, SUFFIX = "def f():\n", "\n    return x"
MIDDLE = "x = 1"  # what the scripted models write into the gap
QWEN_PROMPT = f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
GREEDY = {"temperature": 0, "max_tokens": 3}


@pytest.fixture(scope="module")
def coders(tmp_path_factory):
    """A server of two tiny coder models (MLX): Qwen's FIM tokens, whose middle ends on
    <|file_sep|> (a token that ends a middle though it is no end-of-text), and Codestral's."""
    models = tmp_path_factory.mktemp("fim")
    qwen_specials = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"]
    make_scripted_model(
        models / QWEN,
        architecture="qwen3",
        script=[MIDDLE, "<|file_sep|>", "junk"],
        chat_template="{{ messages[0].content }}",
        specials=qwen_specials,
        eos="<|endoftext|>",
    )
    make_scripted_model(
        models / CODESTRAL,
        architecture="llama",
        script=[MIDDLE, "</s>"],
        chat_template="{{ messages[0].content }}",
        specials=["[PREFIX]", "[SUFFIX]"],
        eos="</s>",
        bos="<s>",
    )
    with ServerProcess(models, model=QWEN, engine="mlx") as server:
        yield server


@pytest.fixture(scope="module")
def gemma(gemma_llamacpp):
    """The real default model on llama.cpp: no FIM tokens in its vocabulary."""
    return gemma_llamacpp, gemma_llamacpp.model_id


def test_openai_suffix_renders_the_models_fim_tokens(coders):
    client = openai.OpenAI(base_url=f"{coders.base_url}/v1", api_key="x", max_retries=0)
    prompt, answer = rendered_prompt(
        coders,
        lambda: client.completions.create(model=QWEN, prompt=PREFIX, suffix=SUFFIX, **GREEDY),
    )
    assert prompt == QWEN_PROMPT
    # The middle ends at <|file_sep|>: neither it nor the "junk" after it is part of the answer.
    assert answer.choices[0].text == MIDDLE
    assert answer.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=QWEN, prompt=PREFIX, suffix=SUFFIX, stream=True, **GREEDY
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == MIDDLE


def test_suffix_first_family_puts_the_suffix_first(coders):
    client = openai.OpenAI(base_url=f"{coders.base_url}/v1", api_key="x", max_retries=0)
    prompt, answer = rendered_prompt(
        coders,
        lambda: client.completions.create(model=CODESTRAL, prompt=PREFIX, suffix=SUFFIX, **GREEDY),
    )
    assert prompt == f"[SUFFIX]{SUFFIX}[PREFIX]{PREFIX}"
    assert answer.choices[0].text == MIDDLE


def test_ollama_generate_with_suffix(coders):
    client = ollama.Client(host=coders.base_url)
    prompt, answer = rendered_prompt(
        coders,
        lambda: client.generate(
            model=QWEN,
            prompt=PREFIX,
            suffix=SUFFIX,
            options={"temperature": 0, "num_predict": 3},
            stream=False,
        ),
    )
    assert prompt == QWEN_PROMPT
    assert answer.response == MIDDLE and answer.done_reason == "stop"


def test_infill_route_answers_as_llama_server(coders):
    body = {
        "model": QWEN,  # two models are loaded: llama-server's clients leave it out with one
        "input_prefix": PREFIX,
        "input_suffix": SUFFIX,
        "prompt": "    ",  # the cursor's line so far: the middle goes on from it
        "n_predict": 3,
        "temperature": 0,
    }
    url = f"{coders.base_url}/infill"
    prompt, reply = rendered_prompt(coders, lambda: httpx.post(url, json=body, timeout=60))
    assert prompt == QWEN_PROMPT + "    "
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["content"] == MIDDLE and answer["stop"] is True
    assert answer["stop_type"] == "eos" and answer["model"] == QWEN
    assert answer["tokens_predicted"] == 2 and answer["timings"]["predicted_n"] == 2
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert "".join(chunk["content"] for chunk in chunks) == MIDDLE
    assert [chunk["stop"] for chunk in chunks][-1] is True and not chunks[0]["stop"]


def test_model_without_fim_tokens_refuses_suffix(gemma):
    server, model_id = gemma
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=model_id, prompt=PREFIX, suffix=SUFFIX, max_tokens=1)
    error = refused.value.body
    assert error["param"] == "suffix" and model_id in error["message"]
    assert "`suffix`" in error["message"]
    infill = httpx.post(
        f"{server.base_url}/infill",
        json={"model": model_id, "input_prefix": PREFIX, "input_suffix": SUFFIX},
    )
    assert infill.status_code == 400
    assert infill.json()["error"]["param"] == "input_suffix"
    assert model_id in infill.json()["error"]["message"]
