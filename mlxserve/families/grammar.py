"""One tool call in a family's own syntax, as llguidance Lark: the name of one of the tools,
then its arguments constrained by the tool's JSON schema, also where the family does not write
them as JSON (XML parameters, `arg_key`/`arg_value` pairs, Python keyword arguments).

A parameter whose schema is a string is raw text in the XML-like families: any text without
the marker that ends it. What a grammar cannot say of such text (a length, a pattern) is
checked against the schema after sampling, as for every call of these families.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mlxserve.families.calls import raw_text
from mlxserve.pipeline.json_grammar import JsonLark, json_text, literal


@dataclass(frozen=True)
class Param:
    """How a family writes one named argument: `prefix` NAME `infix` VALUE `tail`. With `raw`,
    a string value is raw text (in `quote` when it has one); else every value is JSON."""

    prefix: str
    infix: str
    tail: str
    raw: bool
    quote: str = ""
    separator: str = ""  # the text between parameters


class Spelling:
    """Lark for a syntax's text: markers that are one special token in the model's
    vocabulary as that token (`<[id]>`, which text never matches), the rest as literals."""

    def __init__(self, markers: tuple[str, ...], special_ids: Mapping[str, int]):
        self.special_ids = {m: i for m, i in special_ids.items() if m in markers}
        found = sorted(self.special_ids, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, found)) + ")") if found else None

    def __call__(self, text: str) -> str:
        if not text:
            return ""
        pieces = self._split.split(text) if self._split else [text]
        return _seq(*(self._piece(piece) for piece in pieces if piece))

    def _piece(self, piece: str) -> str:
        token = self.special_ids.get(piece)
        return literal(piece) if token is None else f"<[{token}]>"

    def is_special(self, text: str) -> bool:
        return text in self.special_ids


def _seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def named_arguments(writer: JsonLark, schema, param: Param, spell: Spelling) -> str:
    """The arguments as named parameters in the schema's order, each required one present;
    an open object also takes other names."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
        return _any_parameters(writer, param, spell)
    properties, required = schema.get("properties", {}), schema.get("required", [])
    members = [
        writer.rule(_member(writer, literal(name), sub, schema, param, spell))
        for name, sub in properties.items()
    ]
    listed = writer.members(members, [n in required for n in properties], param.separator)
    if schema.get("additionalProperties", True) is False:
        return (f"({listed})?" if not required else listed) if listed else ""
    extra = _any_parameters(writer, param, spell)
    return f"({listed})? {extra}" if listed else extra


def _any_parameters(writer: JsonLark, param: Param, spell: Spelling) -> str:
    name = writer.terminal("PARAM_NAME", r"/[A-Za-z_][A-Za-z0-9_\-]{0,63}/")
    pair = writer.rule(_member(writer, name, True, True, param, spell))
    separator = literal(param.separator) if param.separator else ""
    return f"({_seq(pair, f'({_seq(separator, pair)})*')})?"


def _member(writer: JsonLark, name: str, schema, root, param: Param, spell: Spelling) -> str:
    head = _seq(spell(param.prefix), name, spell(param.infix))
    if not param.raw or not raw_text(schema):
        return _seq(head, writer.value(schema, root), spell(param.tail))
    options = schema.get("enum") if isinstance(schema, dict) else None
    if isinstance(options, list) and options and all(isinstance(o, str) for o in options):
        value = _seq(writer.rule(" | ".join(literal(o) for o in options)), spell(param.quote))
        return _seq(head, spell(param.quote), value, spell(param.tail))
    closing = param.quote or param.tail
    if spell.is_special(closing):  # text never holds the special token that closes it
        text = _text(writer, schema)
        quoted = _seq(spell(param.quote), text, spell(param.quote))
        return _seq(head, quoted, spell(param.tail))
    if param.quote:
        text = _text_until(writer, param.quote, schema)
        return _seq(head, literal(param.quote), text, spell(param.tail))
    return _seq(head, _text_until(writer, param.tail, schema))


def _text(writer: JsonLark, schema) -> str:
    """Raw text of a string schema's length (a small model may never close unbounded text)."""
    low, high = _length(schema)
    return writer.terminal(f"TEXT_{low}_{high}", f"/(?s:.{{{low},{high}}})/")


def _text_until(writer: JsonLark, end: str, schema) -> str:
    """Text of the schema's length up to and including `end`, whose marker (`end` without its
    newlines) appears only there: one terminal, because a lexeme that ran on into the marker
    could not go back."""
    low, high = _length(schema)
    core = end.strip("\n")
    after = len(end) - end.index(core) - len(core)
    name = "".join(c if c.isalnum() else "_" for c in end).strip("_").upper()
    text = f"/(?s:.{{{low},{high}}}){_regex(end)}/ & ~/(?s:.*){_regex(core)}(?s:.{{{after + 1},}})/"
    return writer.terminal(f"TEXT_{low}_{high}_TO_{name}", text)


def _length(schema) -> tuple[int, str]:
    """A raw string's bounds: at least one character (an empty one cannot be told from no
    value), at most the schema's maxLength where it is small; a larger bound would multiply
    the lexer's states (past llguidance's budget for a long tool list), so it is checked after
    sampling, as every call of these families is."""
    schema = schema if isinstance(schema, dict) else {}
    low, high = schema.get("minLength", 1), schema.get("maxLength")
    low = min(max(low, 1), MAX_TEXT_BOUND) if isinstance(low, int) else 1
    fits = isinstance(high, int) and low <= high <= MAX_TEXT_BOUND
    return low, str(high) if fits else ""


def _regex(text: str) -> str:
    return "".join("\\n" if c == "\n" else f"\\{c}" if c in REGEX_SPECIALS else c for c in text)


MAX_TEXT_BOUND = 64  # the longest raw string length the grammar itself bounds
REGEX_SPECIALS = set("\\.^$*+?()[]{}|/-")
QWEN_XML = Param("<parameter=", ">\n", "\n</parameter>\n", raw=True)
MINIMAX_XML = Param('<parameter name="', '">', "</parameter>\n", raw=True)
GLM_PAIRS = Param("<arg_key>", "</arg_key><arg_value>", "</arg_value>", raw=True)
GEMMA4_PAIRS = Param("", ":", "", raw=True, quote='<|"|>', separator=",")
FUNCTION_GEMMA_PAIRS = Param("", ":", "", raw=True, quote="<escape>", separator=",")
PYTHON_KEYWORDS = Param("", "=", "", raw=False, separator=", ")


def call_rule(writer: JsonLark, name: str, schema, shape: str, spell: Spelling, json_key: str):
    """Lark for one call of tool `name` in `shape` (a ToolSyntax's call shape)."""
    named = literal(name)
    if shape == "json_object":
        head = literal(f'{{"name": {json_text(name)}, "{json_key}": ')
        return f'{head} {writer.value(schema, schema)} "}}"'
    if shape in NAMED:
        before, param, after = NAMED[shape]
        body = named_arguments(writer, schema, param, spell)
        return _seq(spell(before), named, spell(after[0]), body, spell(after[1]))
    before, between, after = JSON_ARGUMENTS[shape]
    return _seq(spell(before), named, spell(between), writer.value(schema, schema), spell(after))


# Families whose arguments are named parameters: text before the name, the parameters' way,
# text after the name and after the parameters.
NAMED = {
    "qwen_xml": ("\n<function=", QWEN_XML, (">\n", "</function>\n")),
    "glm": ("", GLM_PAIRS, ("", "")),
    "minimax": ('<invoke name="', MINIMAX_XML, ('">\n', "</invoke>\n")),
    "gemma4": ("call:", GEMMA4_PAIRS, ("{", "}")),
    "function_gemma": ("call:", FUNCTION_GEMMA_PAIRS, ("{", "}")),
    "python": ("", PYTHON_KEYWORDS, ("(", ")")),
}
# Families whose arguments are one JSON object: text before the name, between it and the
# arguments, and after them.
JSON_ARGUMENTS = {
    "kimi": (
        "<|tool_call_begin|>functions.",
        ":0<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
    ),
    "deepseek": ("<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"),
    "mistral": ("", "[ARGS]", ""),
    "harmony": ("", " <|constrain|>json<|message|>", ""),
}
