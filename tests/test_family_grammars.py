"""Each family's call grammar against its own syntax: llguidance, on a byte vocabulary, accepts
the call as the family writes it (and as the output stage reads it back), and refuses the same
call in another family's syntax."""

from __future__ import annotations

import json

import pytest
from llguidance import LLMatcher
from llguidance.hf import from_tokenizer
from transformers import PreTrainedTokenizerFast

from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from tests.test_tool_parsers import read
from tests.tiny_models import _byte_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 9},
                },
                "required": ["city"],
            },
        },
    }
]
ARGS = {"city": "Paris <b>", "days": 3}
J = '{"city": "Paris <b>", "days": 3}'
# Each family's call, written as the grammar lays it out.
CALLS = {
    "hermes": f'<tool_call>\n{{"name": "get_weather", "arguments": {J}}}\n</tool_call>',
    "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis <b>\n"
    "</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "glm47": "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris <b></arg_value>"
    "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
    "gemma4": '<|tool_call>call:get_weather{city:<|"|>Paris <b><|"|>,days:3}<tool_call|>',
    "function_gemma": "<start_function_call>call:get_weather{city:<escape>Paris <b><escape>,"
    "days:3}<end_function_call>",
    "kimi_k2": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    f"<|tool_call_argument_begin|>{J}<|tool_call_end|><|tool_calls_section_end|>",
    "minimax_m2": '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">'
    'Paris <b></parameter>\n<parameter name="days">3</parameter>\n</invoke>\n'
    "</minimax:tool_call>",
    "deepseek": f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{J}"
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "pythonic": '<|tool_call_start|>[get_weather(city="Paris <b>", days=3)]<|tool_call_end|>',
    "pythonic_list": '[get_weather(city="Paris <b>", days=3)]',
    "mistral": f"[TOOL_CALLS]get_weather[ARGS]{J}",
    "mistral_json": f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {J}}}]',
    "harmony": f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{J}"
    "<|call|>",
    "llama3": f'{{"name": "get_weather", "parameters": {J}}}',
    "gemma": f'{{"name": "get_weather", "arguments": {J}}}',
    "json": f'{{"name": "get_weather", "arguments": {J}}}',
}


@pytest.fixture(scope="module")
def tokenizer():
    hf = PreTrainedTokenizerFast(tokenizer_object=_byte_tokenizer())
    return hf, from_tokenizer(hf, n_vocab=hf.vocab_size + 2, eos_token=2)


def single_tokens(tokenizer, markers) -> dict[str, int]:
    """The markers that are one token (as the engines' special_ids finds them)."""
    hf, _ = tokenizer
    ids = {m: hf.encode(m, add_special_tokens=False) for m in markers}
    return {m: found[0] for m, found in ids.items() if len(found) == 1}


def accepts(tokenizer, lark: str, text: str) -> bool:
    hf, ll = tokenizer
    matcher = LLMatcher(ll, lark, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    tokens = hf.encode(text, add_special_tokens=False)
    return all(matcher.consume_token(t) for t in tokens) and matcher.is_accepting()


def test_every_family_has_a_call():
    assert set(CALLS) == set(SYNTAXES)


@pytest.mark.parametrize("family", sorted(CALLS))
def test_a_forced_call_grammar_takes_the_family_syntax_and_reads_back(tokenizer, family):
    syntax = SYNTAXES[family]
    required = Constraints(TOOLS, tool_choice="required", parallel_tool_calls=False)
    lark = compile_constraints(required, syntax, single_tokens(tokenizer, syntax.markers)).lark
    assert accepts(tokenizer, lark, CALLS[family])
    calls = read(family, CALLS[family], tools=TOOLS).tool_calls
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", ARGS)]
    others = {text for name, text in CALLS.items() if name != family} - {CALLS[family]}
    assert not any(accepts(tokenizer, lark, text) for text in others)


@pytest.mark.parametrize("family", sorted(f for f, s in SYNTAXES.items() if s.opening))
def test_auto_waits_for_the_family_marker(family):
    syntax = SYNTAXES[family]
    grammar = compile_constraints(Constraints(TOOLS, tool_choice="auto"), syntax)
    if syntax.whole_reply:
        assert grammar.trigger is None  # the whole reply: text or calls, from the first token
    else:
        assert grammar.trigger == syntax.opening
        assert grammar.lark.startswith("start:")


def test_arguments_outside_the_schema_are_refused(tokenizer):
    required = Constraints(TOOLS, tool_choice="required", parallel_tool_calls=False)
    syntax = SYNTAXES["qwen3_coder"]
    lark = compile_constraints(required, syntax, single_tokens(tokenizer, syntax.markers)).lark
    wrong_key = CALLS["qwen3_coder"].replace("<parameter=days>", "<parameter=weeks>")
    out_of_range = CALLS["qwen3_coder"].replace("\n3\n", "\n12\n")
    missing = "<tool_call>\n<function=get_weather>\n</function>\n</tool_call>"
    for text in (wrong_key, out_of_range, missing):
        assert not accepts(tokenizer, lark, text)
