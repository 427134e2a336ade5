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

import jsonschema
from llguidance import LLMatcher

from mlxserve.engine.base import Grammar
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.json_grammar import COMPACT_LAYOUT, JsonLark, json_text, literal
from mlxserve.pipeline.request import Constraints
from mlxserve.pipeline.schemas import GrammarSchema, OutputChecks, SchemaCheck, grammar_schema

# How each family frames one call: text before and after its JSON object.
CALL_FRAMES = {"qwen": ('"<tool_call>" "\\n"?', '"\\n"? "</tool_call>"')}
LAZY_TRIGGERS = {"qwen": "<tool_call>", "mistral": "[TOOL_CALLS]"}
MARKERS = {"qwen": ("<tool_call>", "</tool_call>"), "mistral": ("[TOOL_CALLS]",)}
# Calls in one reply when parallel_tool_calls allows several: a small model may otherwise go on
# calling until max_tokens cuts the last call short.
MAX_PARALLEL_CALLS = 4
# A reply that is not a call, for families whose call is the whole reply.
FREE_TEXT = "/\\s*[^{\\s](.|\\n)*/"


def compile_constraints(constraints: Constraints, family: str | None) -> Grammar | None:
    if constraints.json_schema is not None:
        param = constraints.schema_param
        _check_schema(constraints.json_schema, param)
        layout, rewritten = _reply_schema(constraints.json_schema, param)
        writer = JsonLark(layout)
        return _checked(writer.lark(writer.value(rewritten.schema, rewritten.schema)), param)
    if not constraints.wants_tools or family is None:
        return None
    for index, tool in _callable_tools(constraints):
        _check_schema(_parameters(tool), f"tools[{index}].function.parameters")
    writer = JsonLark()
    call = _call_objects(writer, _tool_schemas(constraints), family)
    if family == "mistral":
        more = f' (", " {call}){{0,{MAX_PARALLEL_CALLS - 1}}}'
        more = more if constraints.parallel_tool_calls else ""
        grammar = writer.lark(f'"[TOOL_CALLS]" "[" {call}{more} "]"')
    else:
        grammar = _framed_calls(writer, call, family, constraints)
    trigger = None if constraints.must_call else LAZY_TRIGGERS.get(family)
    return _checked(grammar, "tools", trigger, MARKERS.get(family, ()))


def output_checks(constraints: Constraints) -> OutputChecks:
    """What the output stage checks after sampling: values whose schema was relaxed."""
    if constraints.json_schema is not None:
        _, rewritten = _reply_schema(constraints.json_schema, constraints.schema_param)
        reply = SchemaCheck(constraints.json_schema, rewritten.formats)
        return OutputChecks(
            reply=reply if rewritten.relaxed else None, reply_param=constraints.schema_param
        )
    if not constraints.wants_tools:
        return OutputChecks()
    tools = {
        _name(tool): SchemaCheck(_parameters(tool), rewritten.formats)
        for tool, rewritten in _tool_schemas(constraints)
        if rewritten.relaxed
    }
    return OutputChecks(tools=tools)


def _reply_schema(schema: dict, param: str) -> tuple[dict, GrammarSchema]:
    """The layout and grammar schema of a JSON reply. A strict response format arrives with
    llguidance's own `lenient: false` (api/protocol.py puts it there)."""
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


def _call_objects(writer: JsonLark, tools: list[tuple[dict, GrammarSchema]], family: str) -> str:
    """A rule for one call object, `{"name": ..., "arguments": {...}}`, of any of the tools."""
    key = "parameters" if family == "llama3" else "arguments"
    options = []
    for tool, rewritten in tools:
        head = literal(f'{{"name": {json_text(_name(tool))}, "{key}": ')
        options.append(f'{head} {writer.value(rewritten.schema, rewritten.schema)} "}}"')
    return writer.rule(" | ".join(options))


def _framed_calls(writer: JsonLark, call: str, family: str, constraints: Constraints) -> str:
    opening, closing = CALL_FRAMES.get(family, ("", ""))
    writer.rules["call"] = f"{opening} {call} {closing}".strip()
    more = MAX_PARALLEL_CALLS - 1
    calls = f'call ("\\n" call){{0,{more}}}' if constraints.parallel_tool_calls else "call"
    if constraints.must_call or family in LAZY_TRIGGERS:
        return writer.lark(calls)
    writer.rules["TEXT"] = FREE_TEXT
    return writer.lark(f"(TEXT | {calls})?")  # the call is the whole reply


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


def _checked(
    lark: str, param: str, trigger: str | None = None, markers: tuple[str, ...] = ()
) -> Grammar:
    error = _grammar_error(lark)
    if error:
        message = f"{param}: the schema cannot be enforced: {error.splitlines()[0]}"
        raise RequestError(400, message, param, "unsupported_schema")
    return Grammar(lark, trigger, markers)


@functools.lru_cache(maxsize=256)
def _grammar_error(lark: str) -> str:
    """llguidance's complaint about a grammar ("" when it compiles); repeated schemas hit the
    cache."""
    return LLMatcher.validate_grammar(lark)
