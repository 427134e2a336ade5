"""Prompt building: a model's chat template (or the built-in one for its architecture) rendered
once per request, with the sandboxed Jinja environment chat templates are written for; tool
definitions described in the system message for templates that do not render `tools`."""

from __future__ import annotations

import copy
import functools
import json
from datetime import datetime
from typing import Any

import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from mlxserve.engine.base import IMAGE_MARKER
from mlxserve.families.syntax import ToolSyntax, tools_prompt
from mlxserve.models.templates import builtin_chat_template
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ImagePart, ToolResultPart, Turn


def _raise_exception(message: str):
    raise TemplateError(message)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    """The environment Hugging Face's chat templates are written for (transformers'): `tojson`
    with json.dumps' options and no HTML escaping, `{% break %}`/`{% continue %}`, and `{% do %}`.
    The sandbox keeps attributes and callables in check but lets a template change the lists and
    dicts it works with (Kimi K2's appends to one); `render_chat` hands it copies of its inputs."""

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        options = {"indent": indent, "separators": separators, "sort_keys": sort_keys}
        return json.dumps(value, ensure_ascii=ensure_ascii, **options)

    env = SandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, jinja2.ext.do],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def chat_template_for(model_template: str | None, architecture: str) -> str:
    template = model_template or builtin_chat_template(architecture)
    if not template:
        raise RequestError(
            400,
            f"this model has no chat template and there is no built-in one for "
            f"architecture '{architecture}'; use /v1/completions with a raw prompt",
            "messages",
            "no_chat_template",
        )
    return template


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    tools: list[dict[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> str:
    switches = {}
    if reasoning_effort is not None:
        # Qwen3's switch, DeepSeek V3.1's name for it, and gpt-oss's effort.
        switches["enable_thinking"] = switches["thinking"] = reasoning_effort != "none"
        switches["reasoning_effort"] = reasoning_effort
    # Copies: a template may change what it is given (lists and dicts are mutable to it).
    messages = copy.deepcopy(_system_turns_placed(template, messages))
    try:
        return _compile(template).render(
            messages=messages,
            tools=copy.deepcopy(tools),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=True,
            **switches,
        )
    # TypeError, ValueError: what the messages hold does not suit the template (a call's
    # arguments that are no JSON object, where it iterates them), the client's to fix.
    except (TemplateError, TypeError, ValueError) as exc:
        raise RequestError(
            400, f"the chat template rejected these messages: {exc}", "messages"
        ) from exc


SYSTEM_PROBE, USER_PROBE = "mlxserve system probe", "mlxserve user probe"


def _system_turns_placed(template: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System messages after the first (an Anthropic request's, at their place) as turns of
    their own where the template has them, else merged into the neighbouring turn."""
    if not any(message["role"] == "system" for message in messages[1:]):
        return messages
    return messages if _has_system_turns(template) else _merged_system_turns(messages)


@functools.lru_cache(maxsize=16)
def _has_system_turns(template: str) -> bool:
    """Whether the template gives a system message after the first a turn of its own: not when
    it folds a leading one into the first user turn (Gemma, Mistral), drops or refuses one."""
    system, user = (
        {"role": "system", "content": SYSTEM_PROBE},
        {"role": "user", "content": USER_PROBE},
    )
    folded = {"role": "user", "content": f"{SYSTEM_PROBE}\n\n{USER_PROBE}"}
    try:
        render = _compile(template).render
        if render(messages=[system, user]) == render(messages=[folded]):
            return False
        return SYSTEM_PROBE in render(messages=[user, system], add_generation_prompt=True)
    except (TemplateError, TypeError, ValueError):  # the template refuses the probe
        return False


def _merged_system_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Later system turns, for templates without a place for them, joined to the turn before
    when it is a user turn (or the leading system message), else to the next user turn."""
    merged, waiting = [messages[0]], []
    for message in messages[1:]:
        if message["role"] == "system":
            if merged[-1]["role"] in ("user", "system"):  # system: the leading message
                joined = f"{merged[-1]['content']}\n\n{message['content']}"
                merged[-1] = {**merged[-1], "content": joined}
            else:
                waiting.append(message["content"])
            continue
        if waiting and message["role"] == "user":
            message = {**message, "content": "\n\n".join([*waiting, message["content"]])}
            waiting = []
        merged.append(message)
    if waiting:
        merged.append({"role": "user", "content": "\n\n".join(waiting)})
    return merged


class _JsonArguments(dict):
    """A call's arguments as the mapping Hugging Face chat templates iterate (`arguments|items`,
    `arguments|tojson`), which still reads as the JSON text it came from where a template prints
    it or joins it to a string (DeepSeek's `'...' + arguments + '...'`)."""

    __slots__ = ("_text",)

    def __init__(self, mapping: dict, text: str):
        super().__init__(mapping)
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __add__(self, other):
        return self._text + other if isinstance(other, str) else NotImplemented

    def __radd__(self, other):
        return other + self._text if isinstance(other, str) else NotImplemented


def _template_arguments(arguments: str) -> dict | str:
    """A JSON object's text as a mapping (`_JsonArguments`); any other text as it is."""
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        return arguments
    return _JsonArguments(value, arguments) if isinstance(value, dict) else arguments


def template_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """Turns as chat templates expect them: OpenAI's message dicts, with each call's arguments a
    mapping when they are a JSON object (as Hugging Face templates take them)."""
    messages = []
    for turn in turns:
        message: dict[str, Any] = {"role": turn.role, "content": _content(turn)}
        if turn.name is not None:
            message["name"] = turn.name
        if turn.reasoning:  # Qwen's, DeepSeek's and GLM's name for it, and gpt-oss's
            message["reasoning_content"] = message["thinking"] = turn.reasoning
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _template_arguments(c.arguments)},
                }
                for c in turn.tool_calls
            ]
        results = [part for part in turn.parts if isinstance(part, ToolResultPart)]
        if results:
            message["tool_call_id"] = results[0].call_id
        messages.append(message)
    return messages


def _content(turn: Turn) -> str:
    """The turn's text, with a marker where each image sits (the engine fills it in)."""
    if not turn.has_images:
        return turn.text
    return "".join(
        IMAGE_MARKER if isinstance(part, ImagePart) else Turn("", [part]).text
        for part in turn.parts
    )


def messages_with_tools(
    messages: list[dict], tools: list[dict], syntax: ToolSyntax | None, template: str
) -> list[dict]:
    """For templates that do not render `tools`: earlier calls and their results become plain
    turns the template can show, and the tools offered (if any) are described in the system
    message."""
    if "tools" in template:
        return messages
    plain = [_as_plain_turn(message) for message in messages]
    if not tools:
        return plain
    guide = tools_prompt(tools, syntax)
    if plain and plain[0]["role"] == "system":
        return [{**plain[0], "content": f"{plain[0]['content']}\n\n{guide}"}, *plain[1:]]
    return [{"role": "system", "content": guide}, *plain]


def _as_plain_turn(message: dict) -> dict:
    if message["role"] == "tool":
        result = f"Result of tool call {message.get('tool_call_id', '')}: {message['content']}"
        return {"role": "user", "content": result}
    if message.get("tool_calls"):
        calls = [call.get("function", call) for call in message["tool_calls"]]
        text = "\n".join(
            json.dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls
        )
        return {"role": "assistant", "content": (message.get("content") or "") + text}
    return message
