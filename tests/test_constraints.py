"""Constraints compiled to grammars: which requests get a lazy grammar, which tool a named
choice keeps, and call markers written as special tokens where a vocabulary has them."""

from __future__ import annotations

import pytest

from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "b"}},
]


def test_auto_is_lazy_only_for_families_with_a_call_marker():
    assert compile_constraints(Constraints(TOOLS), "qwen").trigger == "<tool_call>"
    assert compile_constraints(Constraints(TOOLS), "mistral").trigger == "[TOOL_CALLS]"
    whole_reply = compile_constraints(Constraints(TOOLS), "gemma")
    assert whole_reply.trigger is None and "TEXT" in whole_reply.lark
    required = compile_constraints(Constraints(TOOLS, tool_choice="required"), "qwen")
    assert required.trigger is None and "TEXT" not in required.lark


def test_a_named_choice_keeps_only_that_tool():
    named = compile_constraints(Constraints(TOOLS, forced_tool="b"), "json").lark
    assert '{\\"name\\": \\"b\\"' in named and '\\"a\\"' not in named
    with pytest.raises(RequestError, match="'c', which is not in tools"):
        compile_constraints(Constraints(TOOLS, forced_tool="c"), "json")


def test_none_and_plain_requests_have_no_grammar():
    assert compile_constraints(Constraints(TOOLS, tool_choice="none"), "qwen") is None
    assert compile_constraints(Constraints(), None) is None


def test_markers_become_special_tokens_only_where_the_vocabulary_has_them():
    grammar = compile_constraints(Constraints(TOOLS, tool_choice="required"), "qwen")
    assert '"<tool_call>"' in grammar.for_vocabulary([])
    special = grammar.for_vocabulary(["<tool_call>", "</tool_call>"])
    assert '"<tool_call>"' not in special and "<tool_call>" in special and "</tool_call>" in special


def test_one_call_unless_parallel_calls_are_allowed():
    single = compile_constraints(Constraints(TOOLS, "required", parallel_tool_calls=False), "json")
    several = compile_constraints(Constraints(TOOLS, "required"), "json")
    assert single.lark.startswith("start: call\n") and "{0,3}" in several.lark
