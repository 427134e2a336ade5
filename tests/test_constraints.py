"""Constraints compiled to grammars: which requests get a lazy grammar, which tool a named
choice keeps, and call markers written as special tokens where a vocabulary has them."""

from __future__ import annotations

import pytest

from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "b"}},
]


def test_auto_is_lazy_only_for_families_with_a_call_marker():
    assert compile_constraints(Constraints(TOOLS), SYNTAXES["hermes"]).trigger == "<tool_call>"
    assert (
        compile_constraints(Constraints(TOOLS), SYNTAXES["mistral_json"]).trigger == "[TOOL_CALLS]"
    )
    whole_reply = compile_constraints(Constraints(TOOLS), SYNTAXES["gemma"])
    assert whole_reply.trigger is None and "TEXT" in whole_reply.lark
    required = compile_constraints(Constraints(TOOLS, tool_choice="required"), SYNTAXES["hermes"])
    assert required.trigger is None and "TEXT" not in required.lark


def test_a_named_choice_keeps_only_that_tool():
    named = compile_constraints(Constraints(TOOLS, forced_tool="b"), SYNTAXES["json"]).lark
    assert '{\\"name\\": \\"b\\"' in named and '\\"a\\"' not in named
    with pytest.raises(RequestError, match="'c', which is not in tools"):
        compile_constraints(Constraints(TOOLS, forced_tool="c"), SYNTAXES["json"])


def test_none_and_plain_requests_have_no_grammar():
    assert compile_constraints(Constraints(TOOLS, tool_choice="none"), SYNTAXES["hermes"]) is None
    assert compile_constraints(Constraints(), None) is None


def test_markers_become_special_tokens_only_where_the_vocabulary_has_them():
    required = Constraints(TOOLS, tool_choice="required")
    assert '"<tool_call>"' in compile_constraints(required, SYNTAXES["hermes"]).lark
    special = compile_constraints(
        required, SYNTAXES["hermes"], {"<tool_call>": 5, "</tool_call>": 6}
    ).lark
    assert '"<tool_call>"' not in special and "<[5]>" in special and "<[6]>" in special
    # A marker inside a longer literal is cut out of it (harmony's channel header).
    harmony = compile_constraints(required, SYNTAXES["harmony"], {"<|channel|>": 7}).lark
    assert '<[7]> "commentary to=functions."' in harmony


def test_one_call_unless_parallel_calls_are_allowed():
    single = compile_constraints(
        Constraints(TOOLS, "required", parallel_tool_calls=False), SYNTAXES["json"]
    )
    several = compile_constraints(Constraints(TOOLS, "required"), SYNTAXES["json"])
    assert "{0,3}" not in single.lark and "{0,3}" in several.lark


def test_a_lazy_grammar_is_compiled_before_its_trigger_and_holds_from_it(tmp_path):
    """The MLX engine compiles a lazy grammar when the request arrives (off the runner thread):
    the trigger then costs the runner a copy of it, no compile, and the grammar holds at once."""
    from transformers import PreTrainedTokenizerFast

    from mlxserve.engine.mlx.serving.constrained_sampling import GrammarCompiler
    from tests.byte_vocabulary import byte_vocabulary

    vocabulary = byte_vocabulary(tmp_path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    compiler = GrammarCompiler(hf, vocabulary.vocab_size, [0])
    grammar = compile_constraints(Constraints(TOOLS), SYNTAXES["hermes"])
    constraint = compiler.new_constraint(grammar)
    compiled = dict(compiler._compiled)
    assert list(compiled) == [grammar.lark]  # compiled on arrival
    for piece in ("Sure. ", "<tool_call>"):
        for token in vocabulary.tokenize_str(piece):
            assert constraint.next_mask() is None  # free text until the trigger is complete
            constraint.accept(token, vocabulary.decode_str([token]))
    mask = constraint.next_mask()
    allowed = [t for t in range(vocabulary.vocab_size) if mask[t // 32] >> (t % 32) & 1]
    assert vocabulary.decode_str(allowed) == "\n"  # the call's own layout, nothing free
    assert dict(compiler._compiled) == compiled  # the trigger compiled nothing
