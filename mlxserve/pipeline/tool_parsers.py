"""Tool calls: how each model family is told about tools and how its calls are read back.

A family is picked from the model's architecture (or its template's markers). Each parser takes
the model's whole output and returns the plain text that remains and the calls it found.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass, field

FAMILY_BY_ARCHITECTURE = {
    "qwen2": "qwen",
    "qwen3": "qwen",
    "qwen2moe": "qwen",
    "qwen3moe": "qwen",
    "qwen2_vl": "qwen",
    "qwen2_5_vl": "qwen",
    "qwen2vl": "qwen",
    "qwen3_vl": "qwen",
    "qwen3vl": "qwen",
    "llama": "llama3",
    "mistral": "mistral",
    "gemma2": "gemma",
    "gemma3": "gemma",
}


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI sends it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


def tool_family(architecture: str, template: str | None) -> str:
    if template and "[TOOL_CALLS]" in template:
        return "mistral"
    return FAMILY_BY_ARCHITECTURE.get(architecture, "json")


JSON_CALL = '{"name": "<function-name>", "arguments": {<arguments>}}'
CALL_FORMATS = {
    "qwen": f"wrap each call in tags: <tool_call>{JSON_CALL}</tool_call>",
    "llama3": 'reply with only a JSON object: {"name": "<function-name>", "parameters": {...}}',
    "mistral": f"reply with [TOOL_CALLS] followed by a JSON list: [TOOL_CALLS][{JSON_CALL}]",
    "gemma": f"reply with only a JSON object: {JSON_CALL}",
    "json": f"reply with only a JSON object: {JSON_CALL}",
}


def tools_prompt(tools: list[dict], family: str) -> str:
    """System-prompt text describing the tools, for templates that do not render `tools`."""
    specs = "\n".join(json.dumps(tool.get("function", tool)) for tool in tools)
    return (
        "You can call these functions:\n"
        + specs
        + "\n\nTo call a function, "
        + CALL_FORMATS[family]
        + ". Otherwise answer normally."
    )


def parse_tool_calls(text: str, family: str) -> tuple[str, list[ToolCall]]:
    parser = {"qwen": _parse_qwen, "mistral": _parse_mistral}.get(family, _parse_json_calls)
    content, calls = parser(text)
    if not calls and family == "gemma":
        content, calls = _parse_tool_code(text)
    return content.strip(), calls


def _call_from(obj) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        return ToolCall(obj["name"], arguments)
    return ToolCall(obj["name"], json.dumps(arguments))


def _parse_qwen(text: str) -> tuple[str, list[ToolCall]]:
    calls = []
    for block in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.DOTALL):
        try:
            call = _call_from(json.loads(block))
        except json.JSONDecodeError:
            continue
        if call:
            calls.append(call)
    return re.sub(r"<tool_call>.*?</tool_call>", "", text, flags=re.DOTALL), calls


def _parse_mistral(text: str) -> tuple[str, list[ToolCall]]:
    head, marker, tail = text.partition("[TOOL_CALLS]")
    if not marker:
        return text, []
    named = re.match(r"\s*([\w.-]+)\[ARGS\](.*)", tail, re.DOTALL)  # newer: name[ARGS]{...}
    if named:
        return head, [ToolCall(named.group(1), named.group(2).strip())]
    try:
        payload = json.loads(tail.strip())
    except json.JSONDecodeError:
        return text, []
    items = payload if isinstance(payload, list) else [payload]
    calls = [c for c in map(_call_from, items) if c]
    return (head, calls) if calls else (text, [])


def _parse_json_calls(text: str) -> tuple[str, list[ToolCall]]:
    """A whole reply that is a JSON call (or one per line), maybe fenced or python-tagged."""
    body = text.replace("<|python_tag|>", "").strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    body = fence.group(1) if fence else body
    parts = [body] if _is_json(body) else [p for p in re.split(r"\n|;", body) if p.strip()]
    if not parts or not all(_is_json(p) for p in parts):
        return text, []
    items = []
    for part in parts:
        value = json.loads(part)
        items += value if isinstance(value, list) else [value]
    calls = [_call_from(item) for item in items]
    return ("", calls) if calls and None not in calls else (text, [])


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _parse_tool_code(text: str) -> tuple[str, list[ToolCall]]:
    """Gemma's Python-style calls: ```tool_code\nget_weather(city="Paris")\n```."""
    match = re.search(r"```tool_code\s*(.*?)\s*```", text, re.DOTALL)
    if not match:
        return text, []
    try:
        tree = ast.parse(match.group(1).strip(), mode="eval")
    except SyntaxError:
        return text, []
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return text, []
    try:
        arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError:
        return text, []
    rest = text[: match.start()] + text[match.end() :]
    return rest, [ToolCall(node.func.id, json.dumps(arguments))]
