"""Constraints compiled into grammars the engines enforce while sampling: a JSON schema for
`response_format`, and tool calls in the model family's own syntax.

Grammars are llguidance Lark (json_grammar.py writes the JSON); the MLX engine runs them with
llguidance, llama.cpp with its built-in llguidance (`%llguidance` grammars): both get the same
text. A schema that is not valid JSON Schema is refused here with the field it came from, before
any response starts. Keywords the grammar cannot enforce are relaxed and checked after sampling
(schemas.py), unless the schema's owner asked for `strict`: then they are refused too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import jsonschema
from llguidance import LLMatcher

from mlxserve.engine.base import Grammar
from mlxserve.families.grammar import Spelling, call_rule
from mlxserve.families.syntax import ToolSyntax
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.json_grammar import COMPACT_LAYOUT, JsonLark, literal
from mlxserve.pipeline.request import Constraints
from mlxserve.pipeline.schemas import GrammarSchema, OutputChecks, SchemaCheck, grammar_schema

# Calls in one reply when parallel_tool_calls allows several: a small model may otherwise go on
# calling until max_tokens cuts the last call short.
MAX_PARALLEL_CALLS = 4
# A reply that is not a call, for families whose call is the whole reply.
FREE_TEXT = "/\\s*[^{\\[\\s](.|\\n)*/"


def compile_constraints(
    constraints: Constraints,
    syntax: ToolSyntax | None,
    special_ids: Mapping[str, int] = MappingProxyType({}),
) -> Grammar | None:
    """The grammar of a request; `special_ids`: the syntax's markers that are one special
    token in the model's vocabulary."""
    if constraints.json_schema is not None:
        param = constraints.schema_param
        _check_schema(constraints.json_schema, param)
        layout, rewritten = _reply_schema(constraints.json_schema, param)
        writer = JsonLark(layout)
        return _checked(writer.lark(writer.value(rewritten.schema, rewritten.schema)), param)
    if not constraints.wants_tools or syntax is None:
        return None
    for index, tool in _callable_tools(constraints):
        _check_schema(_parameters(tool), f"tools[{index}].function.parameters")
    writer, spell = JsonLark(), Spelling(syntax.markers, special_ids)
    options = [
        call_rule(writer, _name(tool), rewritten.schema, syntax.shape, spell, syntax.json_key)
        for tool, rewritten in _tool_schemas(constraints)
    ]
    calls = _calls(writer, writer.rule(" | ".join(options)), syntax, spell, constraints)
    if not syntax.whole_reply:
        trigger = None if constraints.must_call else syntax.opening
        return _checked(writer.lark(calls), "tools", trigger)
    if constraints.must_call:
        return _checked(writer.lark(calls), "tools")
    writer.rules["TEXT"] = FREE_TEXT
    return _checked(writer.lark(f"(TEXT | {calls})?"), "tools")  # the calls are the whole reply


def _calls(
    writer: JsonLark, call: str, syntax: ToolSyntax, spell: Spelling, constraints: Constraints
) -> str:
    """One call, or up to MAX_PARALLEL_CALLS when the request allows several, framed as the
    family frames them: each in a block of its own, all in one block, or the whole reply."""

    def framed(body: str) -> str:
        return _seq(spell(syntax.section_open), body, spell(syntax.section_close))

    if syntax.whole_reply:
        return framed(_repeated(writer, call, syntax, constraints))
    opening, closing = spell(syntax.opening), spell(syntax.closing or "")
    if syntax.block == "per_call":
        block = writer.rule(_seq(opening, framed(call), closing))
        return _repeated(writer, block, syntax, constraints)
    return _seq(opening, framed(_repeated(writer, call, syntax, constraints)), closing)


def _repeated(writer: JsonLark, item: str, syntax: ToolSyntax, constraints: Constraints) -> str:
    if not constraints.parallel_tool_calls:
        return item
    separator = literal(syntax.separator) if syntax.separator else ""
    return writer.rule(f"{item} ({_seq(separator, item)}){{0,{MAX_PARALLEL_CALLS - 1}}}")


def _seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def output_checks(
    constraints: Constraints, syntax: ToolSyntax | None = None, every_value: bool = False
) -> OutputChecks:
    """What the output stage checks after sampling: values whose schema was relaxed, every
    call of a family whose arguments are not JSON (their text is read into values), and every
    value at all where the engine's grammar may lapse (`every_value`)."""
    if constraints.json_schema is not None:
        _, rewritten = _reply_schema(constraints.json_schema, constraints.schema_param)
        reply = SchemaCheck(constraints.json_schema, rewritten.formats)
        checked = rewritten.relaxed or every_value
        return OutputChecks(reply=reply if checked else None, reply_param=constraints.schema_param)
    if not constraints.wants_tools:
        return OutputChecks()
    read_as_text = syntax is not None and not syntax.json_arguments
    tools = {
        _name(tool): SchemaCheck(_parameters(tool), rewritten.formats)
        for tool, rewritten in _tool_schemas(constraints)
        if rewritten.relaxed or read_as_text or every_value
    }
    return OutputChecks(tools=tools)


def _reply_schema(schema: dict, param: str) -> tuple[dict, GrammarSchema]:
    """The layout and grammar schema of a JSON reply. A strict response format arrives with
    llguidance's own `lenient: false` (api/shared/protocol.py puts it there)."""
    options = schema.get("x-guidance") if isinstance(schema.get("x-guidance"), dict) else {}
    strict = options.get("lenient") is False
    layout = {**COMPACT_LAYOUT, **{k: v for k, v in options.items() if k != "lenient"}}
    body = {k: v for k, v in schema.items() if k != "x-guidance"}
    return layout, grammar_schema(body, param, strict=strict)


def _tool_schemas(constraints: Constraints) -> list[tuple[dict, GrammarSchema]]:
    """Each callable tool with its arguments' grammar schema (closed objects); a tool that
    says `strict: true` has what cannot be enforced refused."""
    schemas = []
    for index, tool in _callable_tools(constraints):
        param = f"tools[{index}].function.parameters"
        strict = tool.get("function", tool).get("strict") is True
        rewritten = grammar_schema(_parameters(tool), param, strict=strict, close_objects=True)
        schemas.append((tool, rewritten))
    return schemas


def _callable_tools(constraints: Constraints) -> list[tuple[int, dict]]:
    """The tools a reply may call, with their places in `tools`."""
    tools = list(enumerate(constraints.tools))
    if constraints.forced_tool is None:
        return tools
    chosen = [(i, t) for i, t in tools if _name(t) == constraints.forced_tool]
    if not chosen:
        raise RequestError(
            400,
            f"tool_choice names function '{constraints.forced_tool}', which is not in tools",
            "tool_choice",
            "invalid_tool_choice",
        )
    return chosen


def _name(tool: dict) -> str:
    return tool.get("function", tool).get("name", "")


def _parameters(tool: dict) -> dict:
    return tool.get("function", tool).get("parameters") or {"type": "object"}


def _check_schema(schema, param: str) -> None:
    if not isinstance(schema, dict):
        raise RequestError(
            400, f"{param}: a JSON schema must be an object", param, "invalid_schema"
        )
    try:
        validator = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        message = f"{param}: not a valid JSON schema: {exc.message}"
        raise RequestError(400, message, param, "invalid_schema") from exc


def _checked(lark: str, param: str, trigger: str | None = None) -> Grammar:
    error = _grammar_error(lark)
    if error:
        message = f"{param}: the schema cannot be enforced: {error.splitlines()[0]}"
        raise RequestError(400, message, param, "unsupported_schema")
    return Grammar(lark, trigger)


@functools.lru_cache(maxsize=256)
def _grammar_error(lark: str) -> str:
    """llguidance's complaint about a grammar ("" when it compiles); repeated schemas hit the
    cache."""
    return LLMatcher.validate_grammar(lark)
