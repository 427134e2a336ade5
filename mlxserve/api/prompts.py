"""Prompt building: a model's chat template (or the built-in one for its architecture) rendered
once per request, with the sandboxed Jinja environment chat templates are written for."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlxserve.api.errors import APIError
from mlxserve.models.templates import builtin_chat_template


def _raise_exception(message: str):
    raise TemplateError(message)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def chat_template_for(model_template: str | None, architecture: str) -> str:
    template = model_template or builtin_chat_template(architecture)
    if not template:
        raise APIError(
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
) -> str:
    try:
        return _compile(template).render(
            messages=messages,
            tools=tools,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=True,
        )
    except TemplateError as exc:
        raise APIError(
            400, f"the chat template rejected these messages: {exc}", "messages"
        ) from exc
