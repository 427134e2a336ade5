"""Reading tool calls back: each family's parser takes the text of one call block (between
its opening and closing markers) and returns the calls in it.

mlx-lm's parsers (`mlx_lm.tool_parsers`) read most families; gpt-oss's harmony, DeepSeek
V3.1 and the JSON families are read here (mlx-lm has no parser for the first two, and the JSON
ones also take the shapes older templates write).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

Parser = Callable[[str, list[dict]], list["ToolCall"]]


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI sends it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


def mlx_lm_parser(module: str) -> Parser:
    """One of mlx-lm's parsers; a block it cannot read holds no call."""

    def parse(block: str, tools: list[dict]) -> list[ToolCall]:
        parse_tool_call = importlib.import_module(f"mlx_lm.tool_parsers.{module}").parse_tool_call
        try:
            found = parse_tool_call(block, tools or None)
        except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
            return []
        return [c for c in map(call_from, found if isinstance(found, list) else [found]) if c]

    return parse


def call_from(obj) -> ToolCall | None:
    """A call from a `{"name", "arguments" | "parameters"}` object, or None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        return ToolCall(obj["name"], arguments)
    return ToolCall(obj["name"], json.dumps(arguments, ensure_ascii=False))


def parse_json_block(block: str, tools: list[dict]) -> list[ToolCall]:
    """A JSON call object (or a list of them), as Qwen's `<tool_call>` blocks hold."""
    try:
        value = json.loads(block)
    except json.JSONDecodeError:
        return []
    calls = [call_from(item) for item in (value if isinstance(value, list) else [value])]
    return calls if calls and None not in calls else []


def parse_json_reply(text: str, tools: list[dict]) -> list[ToolCall]:
    """A whole reply that is a JSON call (or one per line), maybe fenced or python-tagged."""
    body = text.replace("<|python_tag|>", "").strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    body = fence.group(1) if fence else body
    parts = [body] if _is_json(body) else [p for p in re.split(r"\n|;", body) if p.strip()]
    if not parts or not all(_is_json(p) for p in parts):
        return []
    items = []
    for part in parts:
        value = json.loads(part)
        items += value if isinstance(value, list) else [value]
    calls = [call_from(item) for item in items]
    return calls if calls and None not in calls else []


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def parse_tool_code(block: str, tools: list[dict]) -> list[ToolCall]:
    """Gemma 3's Python-style call, the inside of a ```tool_code block: get_weather(city="x")."""
    try:
        node = ast.parse(block.strip(), mode="eval").body
    except SyntaxError:
        return []
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return []
    try:
        arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError:
        return []
    return [ToolCall(node.func.id, json.dumps(arguments, ensure_ascii=False))]


def parse_gemma_reply(text: str, tools: list[dict]) -> list[ToolCall]:
    """Gemma 3: a whole-reply JSON call, or a ```tool_code block."""
    block = re.search(r"```tool_code\s*(.*?)\s*```", text, re.DOTALL)
    calls = parse_json_reply(text, tools)
    return calls or (parse_tool_code(block.group(1), tools) if block else [])


QUOTED_CALL_HEAD = re.compile(r"\s*call:([\w.\-]+)\{")
QUOTED_KEY = re.compile(r"\s*([\w\-]+):")


def quoted_call_parser(quote: str) -> Parser:
    """FunctionGemma's `call:NAME{key:<escape>text<escape>,n:1}` (and Gemma 4's with `<|"|>`):
    strings between `quote` markers (any text but the marker), other values JSON, as the
    grammar writes them. Read here because mlx-lm's parsers end a call at the first `}` or
    rewrite `key:` inside JSON strings too."""

    def parse(block: str, tools: list[dict]) -> list[ToolCall]:
        head = QUOTED_CALL_HEAD.match(block)
        if head is None:
            return []
        arguments, position = {}, head.end()
        try:
            while not block.startswith("}", position):
                key = QUOTED_KEY.match(block, position)
                value, position = _quoted_value(block, key.end(), quote)
                arguments[key.group(1)] = value
                position += block.startswith(",", position)
        except (AttributeError, ValueError):  # no key where one belongs, or a broken value
            return []
        return [ToolCall(head.group(1), json.dumps(arguments, ensure_ascii=False))]

    return parse


def _quoted_value(block: str, position: int, quote: str) -> tuple[object, int]:
    if block.startswith(quote, position):
        end = block.index(quote, position + len(quote))
        return block[position + len(quote) : end], end + len(quote)
    return json.JSONDecoder().raw_decode(block, position)


def xml_parser(function: str, parameter: str, end: str) -> Parser:
    """Qwen3-Coder's and MiniMax's XML calls as the grammar writes them: `function` and
    `parameter` patterns name the call and each argument; a string argument is raw text up to
    `end`, any other a JSON value read as JSON (so a `</parameter>` inside one of its strings
    does not end it, where mlx-lm's parsers cut at the first)."""
    function_head, parameter_head = re.compile(function), re.compile(parameter)

    def parse(block: str, tools: list[dict]) -> list[ToolCall]:
        head = function_head.search(block)
        if head is None:
            return []
        properties = _properties(tools, head.group(1))
        arguments, position = {}, head.end()
        while (found := parameter_head.match(block, position)) is not None:
            value, position = _xml_value(block, found.end(), properties.get(found.group(1)), end)
            if position < 0:
                return []
            arguments[found.group(1)] = value
            position += len(end)
        return [ToolCall(head.group(1), json.dumps(arguments, ensure_ascii=False))]

    return parse


def _xml_value(block: str, position: int, schema, end: str) -> tuple[object, int]:
    """A parameter's value and where its `end` marker is (-1: nowhere)."""
    if not raw_text(schema):
        try:
            value, after = json.JSONDecoder().raw_decode(block, position)
            return value, block.find(end, after)
        except ValueError:
            pass
    stop = block.find(end, position)
    return block[position:stop], stop


def _properties(tools: list[dict], name: str) -> dict:
    for tool in tools:
        function = tool.get("function", tool)
        if function.get("name") == name:
            return (function.get("parameters") or {}).get("properties") or {}
    return {}


def raw_text(schema) -> bool:
    """Whether a parameter is written as raw text in the XML-like syntaxes: a string, or a
    value of any type."""
    if not isinstance(schema, dict):
        return True
    kind = schema.get("type")
    if isinstance(kind, list):
        return "string" in kind
    if kind is None:
        return not any(key in schema for key in ("properties", "items", "anyOf", "oneOf"))
    return kind == "string"


def first_of(*parsers: Parser) -> Parser:
    """The calls the first parser that finds any finds."""

    def parse(block: str, tools: list[dict]) -> list[ToolCall]:
        return next((calls for parser in parsers if (calls := parser(block, tools))), [])

    return parse


HARMONY_CALL = re.compile(
    r"(?:to=functions\.)?([\w.\-]+)\s*(?:<\|channel\|>\w+\s*)?(?:<\|constrain\|>\s*\w+\s*)?"
    r"<\|message\|>(.*?)(?:<\|call\|>|$)",
    re.DOTALL,
)


def parse_harmony(block: str, tools: list[dict]) -> list[ToolCall]:
    """gpt-oss: `NAME <|constrain|>json<|message|>{...}`, what follows `to=functions.` in the
    commentary channel (up to `<|call|>`, which ends the reply). Written from
    the harmony format's description (the reference `openai-harmony` loads its tokenizer from
    the network, which a local server must not need)."""
    return _json_arguments_calls(HARMONY_CALL.findall(block))


DEEPSEEK_CALL = re.compile(
    r"(?:<｜tool▁call▁begin｜>)?\s*(?:function<｜tool▁sep｜>)?([\w.\-]+)\s*<｜tool▁sep｜>"
    r"\s*(?:```json\s*)?(.*?)\s*(?:```\s*)?(?:<｜tool▁call▁end｜>|$)",
    re.DOTALL,
)


def parse_deepseek(block: str, tools: list[dict]) -> list[ToolCall]:
    """DeepSeek V3.1+: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`, each
    call of the section (and V3's `function<｜tool▁sep｜>NAME` with a fenced JSON body)."""
    return _json_arguments_calls(DEEPSEEK_CALL.findall(block))


def _json_arguments_calls(found: list[tuple[str, str]]) -> list[ToolCall]:
    calls = []
    for name, arguments in found:
        try:
            value = json.loads(arguments.strip() or "{}")
        except json.JSONDecodeError:
            return []
        if not isinstance(value, dict):
            return []
        calls.append(ToolCall(name, json.dumps(value, ensure_ascii=False)))
    return calls
