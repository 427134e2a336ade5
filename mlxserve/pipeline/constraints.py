"""Constraints compiled into grammars the engines enforce while sampling: a JSON schema for
`response_format`, and tool calls in the model family's own syntax.

Grammars are llguidance Lark with JSON schemas inlined (`%json {...}`); the MLX engine runs
them with llguidance, llama.cpp with its built-in llguidance (`%llguidance` grammars). A schema
that is not valid JSON Schema, or that uses a keyword llguidance cannot enforce, is refused
here with the field it came from, before any response starts.
"""

from __future__ import annotations

import functools
import json

import jsonschema
from llguidance import LLMatcher

from mlxserve.engine.base import Grammar
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import Constraints

# Compact JSON, as models write it: free white space lets a small model loop on blank lines.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# How each family frames one call: text before and after its JSON object.
CALL_FRAMES = {"qwen": ('"<tool_call>" "\\n"?', '"\\n"? "</tool_call>"')}
LAZY_TRIGGERS = {"qwen": "<tool_call>", "mistral": "[TOOL_CALLS]"}
MARKERS = {"qwen": ("<tool_call>", "</tool_call>"), "mistral": ("[TOOL_CALLS]",)}
# Calls in one reply when parallel_tool_calls allows several: a small model may otherwise go on
# calling until max_tokens cuts the last call short.
MAX_PARALLEL_CALLS = 4
# A reply that is not a call, for families whose call is the whole reply.
FREE_TEXT = "TEXT: /\\s*[^{\\s](.|\\n)*/"


def compile_constraints(constraints: Constraints, family: str | None) -> Grammar | None:
    if constraints.json_schema is not None:
        param = constraints.schema_param
        _check_schema(constraints.json_schema, param)
        return _checked(f"start: {json_rule(constraints.json_schema)}\n", param)
    if not constraints.wants_tools or family is None:
        return None
    tools = _callable_tools(constraints)
    for index, tool in enumerate(tools):
        _check_schema(_parameters(tool), f"tools[{index}].function.parameters")
    if family == "mistral":
        grammar = _mistral_calls(tools, constraints.parallel_tool_calls)
    else:
        grammar = _framed_calls(tools, family, constraints)
    trigger = None if constraints.must_call else LAZY_TRIGGERS.get(family)
    return _checked(grammar, "tools", trigger, MARKERS.get(family, ()))


def json_rule(schema: dict) -> str:
    layout = {**JSON_LAYOUT, **schema.get("x-guidance", {})}
    return "%json " + json.dumps({**schema, "x-guidance": layout})


def _framed_calls(tools: list[dict], family: str, constraints: Constraints) -> str:
    opening, closing = CALL_FRAMES.get(family, ("", ""))
    call = f"{opening} {json_rule(_call_schema(tools, family))} {closing}".strip()
    more = MAX_PARALLEL_CALLS - 1
    calls = f'call ("\\n" call){{0,{more}}}' if constraints.parallel_tool_calls else "call"
    if constraints.must_call or family in LAZY_TRIGGERS:
        return f"start: {calls}\ncall: {call}\n"
    return f"start: (TEXT | {calls})?\ncall: {call}\n{FREE_TEXT}\n"  # the call is the reply


def _mistral_calls(tools: list[dict], parallel: bool) -> str:
    most = MAX_PARALLEL_CALLS if parallel else 1
    calls = {
        "type": "array",
        "items": _call_schema(tools, "mistral"),
        "minItems": 1,
        "maxItems": most,
    }
    return f'start: "[TOOL_CALLS]" {json_rule(calls)}\n'


def _call_schema(tools: list[dict], family: str) -> dict:
    key = "parameters" if family == "llama3" else "arguments"
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": _name(tool)}, key: _parameters(tool)},
            "required": ["name", key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _callable_tools(constraints: Constraints) -> list[dict]:
    if constraints.forced_tool is None:
        return constraints.tools
    chosen = [t for t in constraints.tools if _name(t) == constraints.forced_tool]
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
