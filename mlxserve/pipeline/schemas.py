"""Client schemas made fit for the grammar, and the check of what the grammar left out.

The grammar runs on llguidance in this process (MLX) and inside the llama.cpp child, whose
llguidance is older; a schema keyword either of them cannot enforce is relaxed: dropped, or for
a `format` with a pattern that approximates it. The client's own schema then checks each
finished value after sampling. A strict owner (`strict: true`) gets a 400 instead.

Tool arguments are also closed: an object whose schema does not allow more keys gets
`additionalProperties: false`, as OpenAI's strict mode and llama.cpp's converter do, so a model
cannot copy the schema's own keys into its arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import jsonschema

from mlxserve.pipeline.errors import RequestError

# Validation keywords llguidance does not implement (its lenient mode drops them).
UNENFORCEABLE = frozenset(
    {
        "propertyNames",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "if",
        "then",
        "else",
        "not",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$recursiveRef",
    }
)
# Formats both llguidance builds enforce (the child's has no `uri`).
GRAMMAR_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
# Formats the grammar approximates with a pattern: RFC 3986's characters, a scheme for a URI.
URI_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*"
FORMAT_PATTERNS = {
    "uri": rf"^[A-Za-z][A-Za-z0-9+.\-]*:{URI_CHARS}$",
    "uri-reference": rf"^{URI_CHARS}$",
}
# Where subschemas sit: maps of them, lists of them, and single ones.
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
SCHEMA_SINGLES = ("items", "additionalProperties", "additionalItems")
COMPOSITION = ("anyOf", "oneOf", "allOf")
# Keywords by which an object allows keys beyond its `properties`.
OPENING = ("additionalProperties", "patternProperties")


@dataclass(frozen=True)
class GrammarSchema:
    schema: dict | bool  # what the grammar enforces
    relaxed: tuple[str, ...] = ()  # what it does not: "<JSON pointer>: <keyword>"
    formats: frozenset[str] = frozenset()  # the relaxed formats


def grammar_schema(
    schema: dict, param: str, *, strict: bool = False, close_objects: bool = False
) -> GrammarSchema:
    """`schema` as the grammar takes it; with `strict`, a keyword it cannot enforce is a 400."""
    rewriter = _Rewriter(param, strict, close_objects, merged_defs=_intersects(schema))
    rewritten = rewriter.node(schema, "", merged=False)
    return GrammarSchema(rewritten, tuple(rewriter.relaxed), frozenset(rewriter.formats))


def map_subschemas(schema: dict, visit: Callable[[object, str, str | int | None], object]) -> dict:
    """`schema` with `visit(subschema, keyword, name or index)` applied to each direct
    subschema; everything else (enum values, defaults) is kept as it is."""
    out = {}
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: visit(sub, key, name) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [visit(sub, key, index) for index, sub in enumerate(value)]
        elif key in SCHEMA_SINGLES and isinstance(value, (dict, bool)):
            out[key] = visit(value, key, None)
        else:
            out[key] = value
    return out


class _Rewriter:
    def __init__(self, param: str, strict: bool, close_objects: bool, merged_defs: bool):
        self.param, self.strict, self.close_objects = param, strict, close_objects
        self.merged_defs = merged_defs  # definitions may be intersected: never close them
        self.relaxed: list[str] = []
        self.formats: set[str] = set()

    def node(self, schema, path: str, merged: bool):
        """One subschema; `merged` when llguidance intersects it with its parent (allOf
        branches, branches beside the parent's own properties), where closing would forbid the
        parent's keys."""
        if not isinstance(schema, dict):
            return schema
        kept = {}
        for key, value in schema.items():
            if key in UNENFORCEABLE:
                self._relax(path, key)
            elif key == "format" and isinstance(value, str) and value not in GRAMMAR_FORMATS:
                self._relax(path, f"format '{value}'")
                self.formats.add(value)
                if value in FORMAT_PATTERNS and "pattern" not in schema:
                    kept["pattern"] = FORMAT_PATTERNS[value]
            else:
                kept[key] = value
        if "oneOf" in kept and not self.strict:
            self._relax(path, "oneOf")  # as anyOf: a value may then match several branches
            branches = kept.pop("oneOf")
            if "anyOf" in kept:
                kept["allOf"] = [*kept.get("allOf", []), {"anyOf": branches}]
            else:
                kept["anyOf"] = branches
        rewritten = map_subschemas(
            kept, lambda sub, key, name: self._child(kept, merged, sub, key, name, path)
        )
        if self.close_objects and not merged and _closable(rewritten, schema):
            rewritten["additionalProperties"] = False
        return rewritten

    def _child(self, parent: dict, parent_merged: bool, sub, key: str, name, path: str):
        where = f"{path}/{key}" if name is None else f"{path}/{key}/{_escaped(name)}"
        if key in ("$defs", "definitions"):
            return self.node(sub, where, self.merged_defs)
        own_keys = parent_merged or any(k in parent for k in ("properties", *OPENING))
        return self.node(sub, where, key == "allOf" or (key in COMPOSITION and own_keys))

    def _relax(self, path: str, keyword: str) -> None:
        if self.strict:
            message = (
                f"{self.param}: the schema cannot be enforced: {keyword} at {path or '/'} is not "
                "supported under strict (without strict it is checked after sampling instead)"
            )
            raise RequestError(400, message, self.param, "unsupported_schema")
        self.relaxed.append(f"{path or '/'}: {keyword}")


def _closable(rewritten: dict, original: dict) -> bool:
    """An object schema that leaves extra keys open only by saying nothing about them."""
    types = rewritten.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if not (is_object or ("properties" in rewritten and types is None)):
        return False
    if any(key in rewritten for key in OPENING) or "$ref" in rewritten:
        return False
    if original.get("unevaluatedProperties", False) is not False:
        return False  # a schema (or true) there lets more keys in
    branches = [b for key in COMPOSITION for b in rewritten.get(key, [])]
    return not any(isinstance(b, dict) and _declares_keys(b) for b in branches)


def _intersects(schema) -> bool:
    """Whether llguidance intersects anything with its parent here (allOf, or a $ref beside
    other keywords): definitions it may reach are then left open."""
    if not isinstance(schema, dict):
        return False
    if "allOf" in schema or ("$ref" in schema and _declares_keys(schema, ("$ref",))):
        return True
    found = []
    map_subschemas(schema, lambda sub, key, name: found.append(_intersects(sub)))
    return any(found)


def _declares_keys(schema: dict, besides: tuple[str, ...] = ()) -> bool:
    keys = ("properties", "$ref", *OPENING, *COMPOSITION)
    return any(key in schema for key in keys if key not in besides)


def _escaped(name) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class SchemaCheck:
    """A value's check against the client's full schema, after sampling."""

    schema: dict
    formats: frozenset[str] = frozenset()  # checked where jsonschema has a checker for them

    def problem(self, value) -> str | None:
        """The first way `value` fails the schema, naming where and the keyword; None if none."""
        validator_class = _decimal_validator(
            jsonschema.validators.validator_for(self.schema, jsonschema.Draft202012Validator)
        )
        checker = jsonschema.FormatChecker(
            [f for f in self.formats if f in jsonschema.FormatChecker().checkers]
        )
        error = jsonschema.exceptions.best_match(
            validator_class(self.schema, format_checker=checker).iter_errors(value)
        )
        if error is None:
            return None
        where = "/" + "/".join(_escaped(part) for part in error.absolute_path)
        keyword = "/" + "/".join(_escaped(part) for part in error.absolute_schema_path)
        return f"at {where}: {error.message} (schema keyword {keyword})"


@functools.cache
def _decimal_validator(validator_class):
    return jsonschema.validators.extend(validator_class, {"multipleOf": _decimal_multiple_of})


def _decimal_multiple_of(validator, divisor, instance, schema):
    """multipleOf on the decimal numbers JSON writes: 0.07 is a multiple of 0.01, though in
    binary floating point (jsonschema's own check) it is not."""
    if validator.is_type(instance, "number") and Decimal(str(instance)) % Decimal(str(divisor)):
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


@dataclass(frozen=True)
class OutputChecks:
    """The values of one reply to check after sampling: those whose schema was relaxed."""

    reply: SchemaCheck | None = None  # a JSON reply's
    reply_param: str = "response_format"  # the field the reply's schema came from
    tools: dict[str, SchemaCheck] = field(default_factory=dict)  # calls' arguments, by tool

    def __bool__(self) -> bool:
        return self.reply is not None or bool(self.tools)
