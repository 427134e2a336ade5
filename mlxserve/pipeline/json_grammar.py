"""JSON schemas as llguidance Lark, with numbers that always end.

llguidance compiles `%json {schema}` itself, but it bounds neither a number's fraction nor,
without `minimum` and `maximum`, its digits and exponent: a small model may write digits until
max_tokens cuts the JSON short. So where a value may hold such a number (a `number`, an integer
with `multipleOf`, a value of any type), the JSON around it is written here as Lark rules, and
the rest stays `%json` leaves:

- a number without bounds has at most 16 integral and 16 fractional digits and no exponent, as
  in llama.cpp's JSON grammars; an integer without bounds gets the same 16 digits (as the
  `minimum`/`maximum` it lacks, so also inside leaves);
- a number with bounds or `multipleOf` is a leaf with `multipleOf` 1e-10 (unless it has its
  own): at most 10 fractional digits, the finest step llguidance reads exactly. Its sign is
  written in Lark, because the llama.cpp child's llguidance cannot put a minus sign before a
  `multipleOf` number.

Objects list their properties in schema order, as llguidance's own compiler does. The layout is
compact (`", "`, `": "`); a schema that asks for another layout is left to llguidance whole.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from mlxserve.pipeline.schemas import UNENFORCEABLE, map_subschemas

# Compact JSON, as models write it: free white space lets a small model loop on blank lines.
COMPACT_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
DIGIT_BOUND = 9_999_999_999_999_998  # 16 digits; a double holds it exactly (not ...999)
FRACTION_STEP = 1e-10  # llguidance reads multipleOf with a 32-bit coefficient: 1e-10 is finest
NUMBER = r"/-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?/"
INTEGER = r"/-?(0|[1-9][0-9]{0,15})/"
STRING = r'/"(\\([\"\\\/bfnrt]|u[a-fA-F0-9]{4})|[^\"\\\x00-\x1F\x7F])*"/'
# Keywords that constrain a value (llguidance's own, and those it cannot enforce).
CONSTRAINTS = UNENFORCEABLE | {
    "anyOf", "oneOf", "allOf", "$ref", "const", "enum", "type", "items", "additionalItems",
    "prefixItems", "minItems", "maxItems", "properties", "additionalProperties",
    "patternProperties", "required", "minProperties", "maxProperties", "minLength",
    "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf",
}  # fmt: skip
# What only describes a value: left out of the grammar, which it would only make larger.
ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment"})
OBJECT_KEYS = {"type", "properties", "required", "additionalProperties"}
ARRAY_KEYS = {"type", "items", "minItems", "maxItems"}
NUMBER_KEYS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
# The type a keyword implies when a schema names none: narrower than the schema, never wider.
IMPLIED_TYPES = {
    **dict.fromkeys(("properties", "required", "additionalProperties"), "object"),
    **dict.fromkeys(("patternProperties", "minProperties", "maxProperties"), "object"),
    **dict.fromkeys(("items", "prefixItems", "minItems", "maxItems"), "array"),
    **dict.fromkeys(("minLength", "maxLength", "pattern", "format"), "string"),
    **dict.fromkeys(NUMBER_KEYS - {"type"}, "number"),
}


class JsonLark:
    """The rules of one grammar. `value()` gives the Lark expression for a JSON value that
    matches a schema; `root` is the document the schema's `$ref`s point into."""

    def __init__(self, layout: dict = COMPACT_LAYOUT):
        self.layout = layout
        self.rules: dict[str, str] = {}
        self._refs: dict[tuple[int, str], str] = {}

    def lark(self, start: str) -> str:
        rules = "".join(f"{name}: {body}\n" for name, body in self.rules.items())
        return f"start: {start}\n{rules}"

    def value(self, schema, root) -> str:
        if self.layout != COMPACT_LAYOUT or not self._needs_rules(schema, root, frozenset()):
            return self.leaf(schema, root)
        keys = _constraints(schema)
        if not keys:
            return self._any()
        if keys == {"$ref"}:
            return self._ref(schema["$ref"], root)
        if len(keys) == 1 and keys <= {"anyOf", "oneOf"}:
            options = schema[keys.pop()]
            return self.rule(" | ".join(self.value(option, root) for option in options))
        types = _types(schema)
        if types is None:
            return self.leaf(schema, root)
        options = [self._typed(schema, kind, keys, root) for kind in types]
        return options[0] if len(options) == 1 else self.rule(" | ".join(options))

    def leaf(self, schema, root) -> str:
        """`schema` compiled by llguidance, with every integer and number bounded."""
        body = bounded(schema) if isinstance(schema, dict) else {} if schema else {"enum": []}
        if root is not None and "$ref" in json.dumps(body):  # its definitions go with it
            for key in ("$defs", "definitions"):
                if isinstance(root, dict) and key in root and key not in body:
                    body[key] = bounded(root[key]) if isinstance(root[key], dict) else root[key]
        return "%json " + json.dumps({**body, "x-guidance": self.layout})

    def _typed(self, schema: dict, kind: str, keys: set[str], root) -> str:
        node = {**schema, "type": kind}
        if kind == "object" and keys <= OBJECT_KEYS:
            return self._object(node, root)
        if kind == "array" and keys <= ARRAY_KEYS:
            return self._array(node, root)
        if kind in ("number", "integer") and keys <= NUMBER_KEYS:
            return self._number(node)
        return self.leaf(node, root)

    def _needs_rules(self, schema, root, seen: frozenset[str]) -> bool:
        """Whether a value of `schema` may hold a number llguidance would not bound."""
        if not isinstance(schema, dict):
            return schema is True
        keys = _constraints(schema)
        if not keys:
            return True
        if keys & {"enum", "const"}:
            return False
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            if self._needs_rules(_resolve(root, ref), root, seen | {ref}):
                return True
        types = _types(schema) or []
        if "number" in types or ("integer" in types and "multipleOf" in schema):
            return True
        open_object = schema.get("additionalProperties", True) is True
        if "object" in types and open_object and "patternProperties" not in schema:
            return True  # extra keys of any value
        if "array" in types and schema.get("items", True) is True and "prefixItems" not in schema:
            return True
        found: list[bool] = []
        map_subschemas(
            schema,
            lambda sub, key, name: found.append(
                key not in ("$defs", "definitions") and self._needs_rules(sub, root, seen)
            ),
        )
        return any(found)

    def _object(self, node: dict, root) -> str:
        properties, required = node.get("properties", {}), node.get("required", [])
        extra = node.get("additionalProperties", True)
        if not isinstance(properties, dict) or not set(required) <= set(properties):
            return self.leaf(node, root)
        members = [
            self.rule(f"{literal(json_text(name) + ': ')} {self.value(sub, root)}")
            for name, sub in properties.items()
        ]
        listed = self.members(members, [name in required for name in properties])
        if extra is False and not listed:
            return '"{}"'
        if extra is False:
            return f'"{{" {listed} "}}"' if required else f'"{{" {listed}? "}}"'
        key = self._extra_key(list(properties))
        pair = self.rule(f'{key} ": " {self.value(extra, root)}')
        if required:
            return f'"{{" {listed} (", " {pair})* "}}"'
        declared = f'{listed} (", " {pair})* | ' if listed else ""
        return f'"{{" ({declared}{pair} (", " {pair})*)? "}}"'

    def members(self, members: list[str], required: list[bool], separator: str = ", ") -> str:
        """The declared properties in order, `separator` between them, each required one
        present: a rule that matches at least one of them ("" when there are none)."""
        first = after = ""  # from member i on: with nothing before it / after a member
        for i in reversed(range(len(members))):
            member, tail = members[i], f" {after}" if after else ""
            if i == 0 or not required[i - 1]:  # where a listing may begin
                skip = f" | {first}" if first and not required[i] else ""
                first = self.rule(f"{member}{tail}{skip}")
            if i > 0:
                step = f"{literal(separator)} {member}" if separator else member
                step = step if required[i] else f"({step})?"
                after = self.rule(f"{step}{tail}")
        return first

    def _extra_key(self, declared: list[str]) -> str:
        """A key that is none of the declared ones."""
        self.terminal("STRING", STRING)
        if not declared:
            return "STRING"
        taken = " | ".join(literal(json_text(name)) for name in declared)
        return self.terminal(f"KEY{len(self.rules)}", f"STRING & ~({taken})")

    def _array(self, node: dict, root) -> str:
        items, low, high = node.get("items", True), node.get("minItems", 0), node.get("maxItems")
        high = 0 if items is False else high  # no item may be there
        counts = isinstance(low, int) and (high is None or (isinstance(high, int) and high >= low))
        if not isinstance(items, (dict, bool)) or not counts:
            return self.leaf(node, root)
        if high == 0:
            return '"[]"'
        item = self.rule(self.value(items, root))
        more = max(low - 1, 0)
        count = f"{{{more},{high - 1}}}" if high is not None else f"{{{more},}}" if more else "*"
        body = f'{item} (", " {item}){count}'
        return f'"[" {body} "]"' if low > 0 else f'"[" ({body})? "]"'

    def _number(self, node: dict) -> str:
        bounds = {key: node[key] for key in NUMBER_KEYS - {"type"} if _is_number(node.get(key))}
        step = bounds.pop("multipleOf", None)
        if not bounds and step is None:
            kind = node["type"].upper()
            return self.terminal(kind, INTEGER if kind == "INTEGER" else NUMBER)
        if node["type"] == "integer" and step is None:
            return self.leaf(node, None)
        return self._signed(node["type"], bounds, step or FRACTION_STEP)

    def _signed(self, kind: str, bounds: dict, step: float) -> str:
        """A bounded number as a `multipleOf` leaf for its magnitude, the sign in Lark."""
        low, low_open = _lower(bounds)
        high, high_open = _upper(bounds)
        base = {"type": kind, "multipleOf": step}
        options = []
        if high > 0 or (high == 0 and not high_open):
            floor = _bound("minimum", max(low, 0), low_open and low >= 0)
            options.append(self.leaf({**base, **floor, **_bound("maximum", high, high_open)}, None))
        if low < 0:
            floor = _bound("minimum", -high, high_open) if high < 0 else _bound("minimum", 0, True)
            magnitude = {**base, **floor, **_bound("maximum", -low, low_open)}
            options.append(f'"-" {self.leaf(magnitude, None)}')
        if not options:  # an empty range: llguidance says so
            return self.leaf({**base, **bounds}, None)
        return self.rule(" | ".join(options))

    def _any(self) -> str:
        if "json_any" not in self.rules:
            self.terminal("STRING", STRING)
            self.terminal("NUMBER", NUMBER)
            self.rules["json_any"] = (
                'json_object | json_array | STRING | NUMBER | "true" | "false" | "null"'
            )
            self.rules["json_member"] = 'STRING ": " json_any'
            self.rules["json_object"] = '"{" (json_member (", " json_member)*)? "}"'
            self.rules["json_array"] = '"[" (json_any (", " json_any)*)? "]"'
        return "json_any"

    def _ref(self, ref: str, root) -> str:
        key = (id(root), ref)
        if key not in self._refs:
            target = _resolve(root, ref)
            if target is None:
                return self.leaf({"$ref": ref}, root)  # llguidance names what is wrong
            name = self._refs[key] = f"ref{len(self._refs)}"
            self.rules[name] = self.value(target, root)
        return self._refs[key]

    def rule(self, body: str) -> str:
        """A rule for `body` (an expression used more than once, or alternatives)."""
        if body.isidentifier():
            return body
        name = f"v{len(self.rules)}"
        self.rules[name] = body
        return name

    def terminal(self, name: str, regex: str) -> str:
        self.rules.setdefault(name, regex)
        return name


def bounded(schema: dict) -> dict:
    """`schema` with the 16-digit bound on every integer and number that lacks one (llguidance
    then allows neither more digits nor an exponent), and without annotations."""
    kept = {key: value for key, value in schema.items() if key not in ANNOTATIONS}
    out = map_subschemas(kept, lambda sub, _, __: bounded(sub) if isinstance(sub, dict) else sub)
    types = out.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if "integer" in types or "number" in types:
        if not any(_is_number(out.get(key)) for key in ("minimum", "exclusiveMinimum")):
            out["minimum"] = -DIGIT_BOUND
        if not any(_is_number(out.get(key)) for key in ("maximum", "exclusiveMaximum")):
            out["maximum"] = DIGIT_BOUND
    return out


def _constraints(schema) -> set[str]:
    return set(schema) & CONSTRAINTS if isinstance(schema, dict) else set()


def _types(schema: dict) -> list[str] | None:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list) and all(isinstance(k, str) for k in kind):
        return kind
    implied = {IMPLIED_TYPES[key] for key in schema if key in IMPLIED_TYPES}
    return [implied.pop()] if kind is None and len(implied) == 1 else None


def _resolve(root, ref: str):
    """The subschema a local `$ref` ("#/$defs/x") points to; None for any other."""
    if not ref.startswith("#"):
        return None
    target = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return None
    return target


def _lower(bounds: dict) -> tuple[float, bool]:
    """The tightest lower bound and whether it is exclusive (the 16-digit one if none)."""
    found = [(bounds.get(k), k.startswith("exclusive")) for k in ("minimum", "exclusiveMinimum")]
    return max((b for b in found if b[0] is not None), default=(-DIGIT_BOUND, False))


def _upper(bounds: dict) -> tuple[float, bool]:
    found = [(bounds.get(k), k.startswith("exclusive")) for k in ("maximum", "exclusiveMaximum")]
    found = [b for b in found if b[0] is not None]
    return min(found, key=lambda b: (b[0], not b[1]), default=(DIGIT_BOUND, False))


def _bound(name: str, value: float, exclusive: bool) -> dict:
    return {("exclusiveM" + name[1:]) if exclusive else name: value}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def literal(text: str) -> str:
    """A Lark string literal for `text`."""
    return json.dumps(text, ensure_ascii=False)
