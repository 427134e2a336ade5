"""Schemas rewritten for the grammar, checked with llguidance itself over a byte-level
vocabulary: tool objects are closed, numbers always end, what the grammar cannot enforce is
relaxed (or refused under strict) and left to the check after sampling."""

from __future__ import annotations

import json

import pytest
from llguidance import LLTokenizer

from mlxserve.engine.base import GenerationStats
from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.constraints import compile_constraints, output_checks
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.output import OutputStage
from mlxserve.pipeline.request import Constraints
from mlxserve.pipeline.schemas import SchemaCheck, grammar_schema
from tests.byte_vocabulary import byte_vocabulary, matches


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> LLTokenizer:
    return byte_vocabulary(tmp_path_factory.mktemp("bytes"))


def tool(name: str, parameters: dict | None = None, **extra) -> dict:
    function = {"name": name, **extra}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def forced(parameters: dict | None, **extra) -> str:
    """The grammar of a forced call to a tool with these parameters."""
    constraints = Constraints([tool("f", parameters, **extra)], forced_tool="f")
    return compile_constraints(constraints, SYNTAXES["json"]).lark


def takes(vocabulary: LLTokenizer, parameters: dict | None, arguments: str) -> bool:
    """Whether a forced call may carry `arguments`."""
    call = f'{{"name": "f", "arguments": {arguments}}}'
    return matches(vocabulary, forced(parameters), call)


NESTED = {
    "type": "object",
    "properties": {
        "point": {"type": "object", "properties": {"x": {"type": "string"}}},
        "tags": {"type": "array", "items": {"properties": {"t": {"type": "boolean"}}}},
        "either": {"anyOf": [{"properties": {"e": {"type": "null"}}}, {"type": "null"}]},
        "ref": {"$ref": "#/$defs/leaf"},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "$defs": {"leaf": {"type": "object", "properties": {"l": {"type": "string"}}}},
}  # fmt: skip


def test_every_tool_object_is_closed_unless_its_schema_opens_it():
    closed = grammar_schema(NESTED, "p", close_objects=True).schema
    props = closed["properties"]
    assert closed["additionalProperties"] is False
    assert props["point"]["additionalProperties"] is False
    assert props["tags"]["items"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False
    assert closed["$defs"]["leaf"]["additionalProperties"] is False
    assert props["map"]["additionalProperties"] == {"type": "string"}  # its own choice stays
    merged = {"type": "object", "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    kept = grammar_schema(merged, "p", close_objects=True).schema
    assert "additionalProperties" not in kept and "additionalProperties" not in kept["allOf"][0]
    assert grammar_schema(NESTED, "p").schema == NESTED  # a response format stays open


def test_a_tool_call_holds_only_declared_keys(vocabulary):
    assert takes(vocabulary, NESTED, '{"point": {"x": "a"}, "ref": {"l": "b"}}')
    assert not takes(vocabulary, NESTED, '{"point": {"x": "a"}, "type": "object"}')
    assert not takes(vocabulary, NESTED, '{"point": {"x": "a", "properties": {}}}')
    assert not takes(vocabulary, NESTED, '{"ref": {"l": "b", "m": "c"}}')
    assert not takes(vocabulary, NESTED, '{"tags": [{"t": true, "u": 1}]}')
    assert takes(vocabulary, NESTED, '{"map": {"any key": "x"}}')


@pytest.mark.parametrize("parameters", [{"type": "object", "properties": {}}, None])
def test_a_tool_without_arguments_gets_exactly_an_empty_object(vocabulary, parameters):
    assert takes(vocabulary, parameters, "{}")
    assert not takes(vocabulary, parameters, '{"properties": {}, "type": "object"}')
    assert not takes(vocabulary, parameters, '{"a": 1}')


NUMBERS = {
    "type": "object",
    "properties": {"n": {"type": "number"}, "i": {"type": "integer"}, "any": {}},
}


@pytest.mark.parametrize(
    ("arguments", "allowed"),
    [
        ('{"n": 1234567890123456.1234567890123456}', True),
        ('{"n": -0.5, "i": -1234567890123456}', True),
        ('{"n": 12345678901234567}', False),  # 17 integral digits
        ('{"n": 1.12345678901234567}', False),  # 17 fractional digits
        ('{"n": 1e5}', False),
        ('{"i": 12345678901234567}', False),
        ('{"any": [1.5, {"k": 12345678901234567}]}', False),
        ('{"any": [1.5, {"k": -3}]}', True),
    ],
)
def test_numbers_have_at_most_16_integral_and_16_fractional_digits(vocabulary, arguments, allowed):
    assert takes(vocabulary, NUMBERS, arguments) is allowed


@pytest.mark.parametrize(
    ("schema", "value", "allowed"),
    [
        ({"type": "number", "minimum": -5, "maximum": 5}, "-4.25", True),
        ({"type": "number", "minimum": -5, "maximum": 5}, "5", True),
        ({"type": "number", "minimum": -5, "maximum": 5}, "5.5", False),
        ({"type": "number", "minimum": -5, "maximum": 5}, "-5.5", False),
        ({"type": "number", "minimum": -5, "maximum": 5}, "1.0000000001", True),
        ({"type": "number", "minimum": -5, "maximum": 5}, "1.00000000001", False),
        ({"type": "number", "exclusiveMaximum": 0}, "-2.5", True),
        ({"type": "number", "exclusiveMaximum": 0}, "0", False),
        ({"type": "integer", "multipleOf": 3}, "-6", True),
        ({"type": "integer", "multipleOf": 3}, "-7", False),
    ],
)
def test_bounded_numbers_keep_their_range_and_sign(vocabulary, schema, value, allowed):
    parameters = {"type": "object", "properties": {"v": schema}, "required": ["v"]}
    assert takes(vocabulary, parameters, f'{{"v": {value}}}') is allowed


def test_json_replies_bound_their_numbers_too(vocabulary):
    lark = compile_constraints(Constraints(json_schema={"type": "object"}), None).lark
    assert matches(vocabulary, lark, '{"a": 12.5, "b": [true, null, "x"]}')
    assert not matches(vocabulary, lark, '{"a": 12345678901234567}')


RELAXED = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "mail": {"type": "string", "format": "email"},
        "odd": {"type": "string", "format": "no-such-format"},
        "headers": {"type": "object", "propertyNames": {"maxLength": 3}},
        "one": {"oneOf": [{"type": "string"}, {"type": "boolean"}]},
    },
    "not": {"required": ["odd"]},
}


def test_what_the_grammar_cannot_enforce_is_relaxed_and_listed():
    relaxed = grammar_schema(RELAXED, "p")
    props = relaxed.schema["properties"]
    assert set(relaxed.relaxed) == {
        "/properties/url: format 'uri'",
        "/properties/odd: format 'no-such-format'",
        "/properties/headers: propertyNames",
        "/properties/one: oneOf",
        "/: not",
    }
    assert relaxed.formats == {"uri", "no-such-format"}
    assert props["url"]["pattern"].startswith("^[A-Za-z]") and "format" not in props["url"]
    assert props["mail"]["format"] == "email"  # both llguidance builds enforce it
    assert "format" not in props["odd"] and "propertyNames" not in props["headers"]
    assert "not" not in relaxed.schema and props["one"] == {
        "anyOf": RELAXED["properties"]["one"]["oneOf"]
    }


def test_a_relaxed_uri_is_still_shaped_like_one(vocabulary):
    assert takes(vocabulary, RELAXED, '{"url": "https://example.com/a?b=c"}')
    assert not takes(vocabulary, RELAXED, '{"url": "not a uri"}')


def test_strict_owners_get_a_400_instead_of_relaxation():
    names = {"type": "object", "properties": {"h": RELAXED["properties"]["headers"]}}
    with pytest.raises(RequestError, match="propertyNames at /properties/h is not") as refused:
        forced(names, strict=True)
    assert refused.value.status == 400 and refused.value.param == "tools[0].function.parameters"
    strict_format = {**RELAXED, "x-guidance": {"lenient": False}}  # how a strict format arrives
    with pytest.raises(RequestError, match="cannot be enforced") as refused:
        compile_constraints(Constraints(json_schema=strict_format), None)
    assert refused.value.param == "response_format"
    assert compile_constraints(Constraints(json_schema=RELAXED), None) is not None


def test_only_relaxed_schemas_are_checked_after_sampling():
    plain = {"type": "object", "properties": {"a": {"type": "string"}}}
    constraints = Constraints([tool("loose", RELAXED), tool("plain", plain)], "required")
    checks = output_checks(constraints)
    assert set(checks.tools) == {"loose"} and checks.tools["loose"].schema == RELAXED
    assert not output_checks(Constraints([tool("plain", plain)], "required"))
    assert output_checks(Constraints(json_schema=RELAXED)).reply.schema == RELAXED


def test_the_check_names_the_place_and_the_keyword():
    check = SchemaCheck(RELAXED, frozenset({"uri"}))
    assert check.problem({"url": "https://a.b"}) is None
    problem = check.problem({"headers": {"long": "x"}})
    assert problem.startswith("at /headers: ")
    assert problem.endswith("(schema keyword /properties/headers/propertyNames/maxLength)")
    assert check.problem({"odd": "x"}).endswith("(schema keyword /not)")
    assert "keyword /properties/one/oneOf" in check.problem({"one": 3})


def test_the_check_reads_multiples_as_the_decimals_json_writes():
    cents = SchemaCheck({"type": "number", "multipleOf": 0.01})
    assert cents.problem(0.07) is None and cents.problem(0.29) is None  # not in binary floats
    assert "is not a multiple of 0.01" in cents.problem(0.071)


def finished(stage: OutputStage, text: str, reason: str = "eosFound") -> list:
    stats = GenerationStats(prompt_tokens=3, completion_tokens=9, stop_reason=reason)
    return stage.feed(text) + stage.finish(stats)


def test_a_call_that_fails_its_relaxed_schema_ends_with_an_error():
    checks = output_checks(Constraints([tool("f", RELAXED)], "required"))
    stage = OutputStage(SYNTAXES["json"], constrained=True, checks=checks)
    with pytest.raises(RequestError, match=r"call to 'f' .* at /: .*keyword /not\)") as failed:
        finished(stage, '{"name": "f", "arguments": {"odd": "x"}}')
    assert failed.value.status == 500 and failed.value.code == "invalid_tool_call"
    passing = OutputStage(SYNTAXES["json"], constrained=True, checks=checks)
    assert finished(passing, '{"name": "f", "arguments": {"mail": "a@b.c"}}')[-1].finish_reason == (
        "tool_calls"
    )
    cut = OutputStage(SYNTAXES["json"], constrained=True, checks=checks)  # a cut call says "length"
    events = finished(cut, '{"name": "f", "arguments": {"odd": "x"', "maxPredictedTokensReached")
    assert events[-1].finish_reason == "length"


def test_a_json_reply_that_fails_its_relaxed_schema_ends_with_an_error():
    stage = OutputStage(
        None, constrained=True, checks=output_checks(Constraints(json_schema=RELAXED))
    )
    with pytest.raises(RequestError, match="the schema of response_format at /") as failed:
        finished(stage, json.dumps({"odd": "x"}))
    assert failed.value.param == "response_format" and failed.value.code == "invalid_output"


TREE = {
    "type": "object",
    "properties": {"root": {"$ref": "#/$defs/node"}},
    "required": ["root"],
    "$defs": {
        "node": {
            "type": "object",
            "properties": {"v": {"type": "number"}, "kids": {"items": {"$ref": "#/$defs/node"}}},
        }
    },
}


def test_recursive_definitions_keep_their_numbers_bounded(vocabulary):
    assert takes(vocabulary, TREE, '{"root": {"v": 1.5, "kids": [{"v": -2}, {"kids": []}]}}')
    assert not takes(vocabulary, TREE, '{"root": {"kids": [{"v": 12345678901234567}]}}')
    assert not takes(vocabulary, TREE, '{"root": {"kids": [{"w": 1}]}}')
