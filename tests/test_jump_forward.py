"""Jump-forward: the text a forced call's grammar allows one way only at its start is read with
the prompt, not sampled. On llama.cpp the child's grammar is the rest of it, checked here with
llguidance on a byte vocabulary against each family's own call (the exact count on the real
Gemma is in test_llamacpp_forced_calls.py); then both engines on the real server."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from mlxserve.engine.base import EngineRequest, Grammar
from mlxserve.engine.llamacpp.jump_forward import forced_start, planned_jump
from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from mlxserve.sampling.params import SamplingParams
from tests.metrics import sampled_tokens
from tests.test_family_grammars import CALLS, TOOLS, accepts, single_tokens
from tests.test_family_grammars import tokenizer as tokenizer  # noqa: F401 (a fixture)

FORCED = Constraints(TOOLS, tool_choice="required", parallel_tool_calls=False)
# What each family's call opens with up to its first value, as the family writes it: cut off,
# the rest of the call is what the grammar left must take.
OPENINGS = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": ',
    "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\n",
    "glm47": "<tool_call>get_weather<arg_key>city</arg_key><arg_value>",
    "gemma4": '<|tool_call>call:get_weather{city:<|"|>',
    "function_gemma": "<start_function_call>call:get_weather{city:<escape>",
    "kimi_k2": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    "<|tool_call_argument_begin|>",
    "minimax_m2": '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">',
    "deepseek": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>",
    "pythonic": "<|tool_call_start|>[get_weather(city=",
    "pythonic_list": "[get_weather(city=",
    "mistral": "[TOOL_CALLS]get_weather[ARGS]",
    "mistral_json": '[TOOL_CALLS][{"name": "get_weather", "arguments": ',
    "harmony": "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
    "llama3": '{"name": "get_weather", "parameters": ',
    "gemma": '{"name": "get_weather", "arguments": ',
    "json": '{"name": "get_weather", "arguments": ',
}


def forced_grammar(tokenizer, family: str, constraints: Constraints = FORCED) -> Grammar:
    syntax = SYNTAXES[family]
    return compile_constraints(constraints, syntax, single_tokens(tokenizer, syntax.markers))


def spelled(tokenizer, pieces) -> str:
    """The pieces as text, each special token id as its marker."""
    hf, _ = tokenizer
    return "".join(p if isinstance(p, str) else hf.decode([p]) for p in pieces)


@pytest.mark.parametrize("family", sorted(OPENINGS))
def test_the_forced_opening_is_cut_off_and_the_rest_holds(tokenizer, family):
    start = forced_start(forced_grammar(tokenizer, family))
    assert spelled(tokenizer, start.pieces) == OPENINGS[family]
    call = CALLS[family]
    assert accepts(tokenizer, start.rest().lark, call.removeprefix(OPENINGS[family]))
    # The last few characters left to the model, which writes them first.
    tail = OPENINGS[family][-3:] if isinstance(start.pieces[-1], str) else ""
    rest = call.removeprefix(OPENINGS[family].removesuffix(tail))
    assert accepts(tokenizer, start.rest(tail).lark, rest)


def test_a_choice_of_tools_keeps_only_the_shared_marker(tokenizer):
    other = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    either = Constraints([*TOOLS, other], tool_choice="required", parallel_tool_calls=False)
    start = forced_start(forced_grammar(tokenizer, "hermes", either))
    assert spelled(tokenizer, start.pieces) == "<tool_call>\n"
    time_call = '{"name": "get_time", "arguments": {}}\n</tool_call>'
    assert accepts(tokenizer, start.rest().lark, time_call)
    assert accepts(tokenizer, start.rest().lark, CALLS["hermes"].removeprefix("<tool_call>\n"))


def test_grammars_without_a_fixed_opening_have_none(tokenizer):
    lazy = forced_grammar(tokenizer, "hermes", Constraints(TOOLS, tool_choice="auto"))
    assert lazy.trigger and forced_start(lazy) is None
    schema = Constraints(json_schema={"type": "string", "maxLength": 8})
    assert forced_start(compile_constraints(schema, None)) is None
    assert forced_start(Grammar('start: "a" | "b"\n')) is None
    assert forced_start(Grammar('start: "a"\n')) is None  # nothing left to sample


def plan(tokenizer, grammar: Grammar, n_predict: int = 100, **fields):
    hf, _ = tokenizer

    async def text_tokens(text: str):
        tokens = hf.encode(text, add_special_tokens=False)
        return tokens, len(hf.decode(tokens[:-1]))

    request = EngineRequest(prompt="", grammar=grammar, **fields)
    return asyncio.run(planned_jump(request, n_predict, {}, text_tokens))


def test_the_jump_leaves_the_last_token_of_its_text_to_the_model(tokenizer):
    grammar = forced_grammar(tokenizer, "json")
    jump = plan(tokenizer, grammar)
    hf, _ = tokenizer
    opening = OPENINGS["json"]
    assert jump.text == opening[:-1] and hf.decode(jump.tokens) == jump.text  # a byte a token
    assert accepts(tokenizer, jump.rest.lark, CALLS["json"].removeprefix(jump.text))


def test_no_jump_where_it_would_change_the_reply(tokenizer):
    grammar = forced_grammar(tokenizer, "json")
    assert plan(tokenizer, grammar, top_logprobs=0) is None  # the jumped tokens have none
    assert plan(tokenizer, grammar, n_predict=10) is None  # the opening fills the budget
    assert plan(tokenizer, grammar, stop=['"name"']) is None  # a stop string inside it
    assert plan(tokenizer, grammar, stop=['arguments": {']) is None  # or crossing its end
    assert plan(tokenizer, grammar, stop=["</tool_call>"]) is not None
    brace = tokenizer[0].encode("{", add_special_tokens=False)[0]
    banned = SamplingParams(logit_bias={brace: -100})  # sampled, the request would fail
    assert plan(tokenizer, grammar, sampling=banned) is None
    assert plan(tokenizer, grammar, sampling=SamplingParams(logit_bias={brace: -50})) is not None


UNIT = {"type": "object", "properties": {"unit": {"enum": ["C", "F"]}}, "required": ["unit"]}


def test_both_engines_read_a_forced_opening_with_the_prompt(twin_server):
    """A named call on the tiny Gemma: the engine samples fewer tokens than the reply holds, by
    at least the opening `{"name": "get_unit", "arguments": ` less its last token, and the
    call is whole and valid."""
    client = openai.OpenAI(base_url=f"{twin_server.base_url}/v1", api_key="x", max_retries=0)
    body = {"model": twin_server.model_id, "prompt": '{"name": "get_unit", "arguments": '}
    counted = httpx.post(f"{twin_server.base_url}/v1/completions", json={**body, "max_tokens": 1})
    opening = counted.json()["usage"]["prompt_tokens"] - 1  # less the BOS
    forced = {
        "model": twin_server.model_id,
        "messages": [{"role": "user", "content": "Which unit?"}],
        "tools": [{"type": "function", "function": {"name": "get_unit", "parameters": UNIT}}],
        "tool_choice": {"type": "function", "function": {"name": "get_unit"}},
        "max_tokens": 64,
    }
    client.chat.completions.create(**forced)  # llama.cpp tries a new grammar once, first
    before = sampled_tokens(twin_server)
    reply = client.chat.completions.create(**forced, temperature=1.0, seed=3)
    call = reply.choices[0].message.tool_calls[0].function
    assert call.name == "get_unit" and call.arguments in ('{"unit": "C"}', '{"unit": "F"}')
    sampled = sampled_tokens(twin_server, before) - before
    assert 0 < sampled <= reply.usage.completion_tokens - (opening - 1), (sampled, reply.usage)
