"""Forced tool calls on the llama.cpp engine end right after the call(s), on the real server and
the real Gemma 3 270M GGUF: finish_reason `tool_calls` (`tool_use` on /v1/messages) and no more
completion tokens than the calls' own text and the end token.

llama.cpp's llguidance ends a grammar only with the vocabulary's end-of-turn token, and Gemma 3
ends a JSON reply with <eos>: masked, it went on with another call wherever the grammar allowed
one, every time, to the last that `parallel_tool_calls` allows (or to max_tokens). The engine
names the model's end tokens in the grammar, so the reply ends where the model ends it, as on
the MLX engine."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import jsonschema
import openai
import pytest
from llguidance import LLMatcher

from mlxserve.engine.llamacpp.protocol import end_tokens, ending_with
from mlxserve.gguf_header import read_scalar_fields
from mlxserve.pipeline.constraints import MAX_PARALLEL_CALLS
from tests.metrics import sampled_tokens
from tests.schemas import validate_json
from tests.server import ServerProcess

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_time"}}
CHOICES = {"required": "required", "named": NAMED}
SEEDS = range(4)
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def llamacpp(gemma_llamacpp) -> ServerProcess:
    return gemma_llamacpp


@pytest.fixture(scope="module")
def gguf_header(models_dir, llamacpp) -> dict:
    return read_scalar_fields(next((models_dir / llamacpp.model_id).glob("*.gguf")))


@pytest.fixture(scope="module")
def llama_client(llamacpp) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llamacpp.base_url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def text_tokens(llamacpp):
    """Tokens of a text, counted by the server's own tokenizer: /v1/completions' prompt_tokens
    less the BOS it adds."""

    def prompt_tokens(text: str) -> int:
        body = {"model": llamacpp.model_id, "prompt": text, "max_tokens": 1, "temperature": 0}
        answer = httpx.post(f"{llamacpp.base_url}/v1/completions", json=body, timeout=60)
        return answer.json()["usage"]["prompt_tokens"]

    bos = prompt_tokens("a") - 1  # "a" is one token
    return lambda text: prompt_tokens(text) - bos


@pytest.fixture(scope="module")
def call_tokens(text_tokens):
    """Tokens of the text the model writes for these calls (Gemma: each call's JSON object,
    one a line)."""

    def count(calls: list[tuple[str, str]]) -> int:
        lines = [f'{{"name": {json.dumps(name)}, "arguments": {args}}}' for name, args in calls]
        return text_tokens("\n".join(lines))

    return count


def forced_reply(client, model_id: str, choice, parallel: bool, seed: int, **extra) -> dict:
    response = client.chat.completions.create(
        model=model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        temperature=1.0,
        seed=seed,
        max_tokens=MAX_TOKENS,
        **extra,
    )
    choice_ = response.choices[0]
    calls = [(c.function.name, c.function.arguments) for c in choice_.message.tool_calls or []]
    return {
        "finish_reason": choice_.finish_reason,
        "calls": calls,
        "completion_tokens": response.usage.completion_tokens,
        "prompt_tokens": response.usage.prompt_tokens,
    }


@pytest.fixture(scope="module")
def replies(llama_client, llamacpp) -> dict:
    """Every case's reply, sent four at a time (the child's slots)."""
    cases = [(c, p, s) for c in CHOICES for p in (False, True) for s in SEEDS]

    def ask(case):
        choice, parallel, seed = case
        return forced_reply(llama_client, llamacpp.model_id, CHOICES[choice], parallel, seed)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(cases, pool.map(ask, cases), strict=True))


def within_the_calls(completion_tokens: int, calls: list, call_tokens) -> bool:
    """No more tokens than the calls' text, the end token and one per call: a sampled reply may
    split a word where the tokenizer would not ("c" "elsius" for "celsius")."""
    return completion_tokens <= call_tokens(calls) + 1 + len(calls)


@pytest.mark.parametrize("parallel", [False, True], ids=["one_call", "parallel"])
@pytest.mark.parametrize("choice", list(CHOICES))
def test_a_forced_reply_ends_right_after_its_calls(replies, call_tokens, choice, parallel):
    for seed in SEEDS:
        reply = replies[(choice, parallel, seed)]
        calls = reply["calls"]
        assert reply["finish_reason"] == "tool_calls", (seed, reply)
        assert 1 <= len(calls) <= (MAX_PARALLEL_CALLS if parallel else 1), (seed, reply)
        for name, arguments in calls:
            assert name == "get_time" if choice == "named" else name in SCHEMAS
            validate_json(arguments, SCHEMAS[name])
        assert within_the_calls(reply["completion_tokens"], calls, call_tokens), (seed, reply)


def test_parallel_replies_end_when_the_model_ends_them(replies):
    """Where more calls are allowed the model may stop after any of them; before, Gemma could
    not end a reply before the grammar's last call (4 calls on every seed)."""
    counts = [len(replies[(c, True, s)]["calls"]) for c in CHOICES for s in SEEDS]
    assert min(counts) < MAX_PARALLEL_CALLS, counts


def test_the_models_end_token_ends_a_reply_the_grammar_lets_go_on(
    llama_client, llamacpp, call_tokens, gguf_header
):
    """Pushed to its end token (the GGUF's EOS, <eos> for Gemma 3), the model ends after its
    first call even where the grammar allows more."""
    eos = gguf_header["tokenizer.ggml.eos_token_id"]
    for choice in CHOICES.values():
        reply = forced_reply(
            llama_client, llamacpp.model_id, choice, True, seed=1, logit_bias={str(eos): 100}
        )
        assert reply["finish_reason"] == "tool_calls" and len(reply["calls"]) == 1, reply
        assert within_the_calls(reply["completion_tokens"], reply["calls"], call_tokens), reply


def test_anthropic_any_tool_use_ends_right_after_its_calls(llamacpp, call_tokens):
    """tool_choice {"type": "any"} through the SDK (parallel calls allowed; no seed there, so
    each request samples afresh)."""
    claude = anthropic.Anthropic(base_url=llamacpp.base_url, api_key="x", max_retries=0)
    tool = {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER}

    def ask(_):
        return claude.messages.create(
            model=llamacpp.model_id,
            max_tokens=MAX_TOKENS,
            messages=ASK,
            tools=[tool],
            tool_choice={"type": "any"},
        )  # at temperature 1, Anthropic's default

    with ThreadPoolExecutor(4) as pool:
        messages = list(pool.map(ask, range(6)))
    counts = []
    for message in messages:
        uses = [block for block in message.content if block.type == "tool_use"]
        assert message.stop_reason == "tool_use" and uses, message
        for use in uses:
            assert use.name == "get_weather"
            jsonschema.validate(use.input, WEATHER)
        calls = [(use.name, json.dumps(use.input, ensure_ascii=False)) for use in uses]
        assert within_the_calls(message.usage.output_tokens, calls, call_tokens), message
        counts.append(len(uses))
    # 4 calls on each of 6 requests is about 0.18^6 now (the model ends after a call about
    # 43% of the time); before, every request made 4.
    assert min(counts) < MAX_PARALLEL_CALLS, counts


def test_a_forced_calls_fixed_opening_is_not_sampled(llama_client, llamacpp, text_tokens):
    """A named call opens with text the grammar allows one way only. All but its last token go
    after the prompt (jump-forward), so the child samples only the rest of the reply; the
    reply, its usage and its arguments are as if it had sampled them all."""
    jumped = text_tokens('{"name": "get_time", "arguments": ') - 1
    forced_reply(llama_client, llamacpp.model_id, NAMED, False, seed=2)  # the grammar checked
    before = sampled_tokens(llamacpp)
    reply = forced_reply(llama_client, llamacpp.model_id, NAMED, False, seed=2)
    assert reply["finish_reason"] == "tool_calls" and reply["calls"][0][0] == "get_time"
    validate_json(reply["calls"][0][1], TIME)
    assert sampled_tokens(llamacpp, before) - before == reply["completion_tokens"] - jumped
    # Asked for log-probabilities, which the jumped tokens would lack, it samples them all.
    before = sampled_tokens(llamacpp)
    sampled = forced_reply(llama_client, llamacpp.model_id, NAMED, False, seed=2, logprobs=True)
    assert sampled_tokens(llamacpp, before) - before == sampled["completion_tokens"]
    assert sampled["prompt_tokens"] == reply["prompt_tokens"]


def test_the_grammar_llama_cpp_gets_may_end_with_the_models_end_tokens(gguf_header):
    """The end tokens come from the GGUF header (Gemma 3's names only its EOS, <eos>; its
    <end_of_turn> is llama.cpp's own end of turn), and the grammar's start rule is wrapped."""
    assert end_tokens(gguf_header, 262144) == (gguf_header["tokenizer.ggml.eos_token_id"],)
    calls = 'start: call ("\\n" call){0,3}\ncall: "{}"\n'
    wrapped = ending_with(calls, (1, 106))
    assert wrapped.startswith("start: mlxserve_reply (<[1]> | <[106]>)?\nmlxserve_reply: call")
    assert LLMatcher.validate_grammar(wrapped) == ""
    assert ending_with(calls, ()) == calls
