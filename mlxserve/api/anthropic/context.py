"""Preparing a Messages request, with the context edit that changes what the model reads:
clear_tool_uses_20250919 replaces older tool results (and optionally their inputs) with a
placeholder once its trigger is reached. Its trigger and its clear_at_least are measured on the
prompt itself, so a cleared request is prepared twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlxserve.api.anthropic.answers import AnthropicAppliedEdit, AnthropicContextManagement
from mlxserve.api.anthropic.conversation import Clearing, Conversation, conversation_of, tool_uses
from mlxserve.api.anthropic.protocol import CLEAR_TOOL_USES, ClearToolUses, CountTokensRequest
from mlxserve.api.state import server_state
from mlxserve.pipeline.prepare import Prepared, prepare
from mlxserve.pipeline.request import GenerateRequest


@dataclass
class PreparedMessage:
    prepared: Prepared
    original_tokens: int  # the prompt's length before any edit
    applied_edits: list[AnthropicAppliedEdit] | None  # None: the request asked for no editing

    @property
    def prompt_tokens(self) -> int:
        return prompt_length(self.prepared)

    @property
    def context_management(self) -> AnthropicContextManagement | None:
        edits = self.applied_edits
        return None if edits is None else AnthropicContextManagement(applied_edits=edits)


async def prepare_message(
    body: CountTokensRequest, neutral: Callable[[Conversation], GenerateRequest]
) -> PreparedMessage:
    """`body` prepared as the request `neutral` makes of its conversation, cleared where its
    clear_tool_uses edit asks."""
    state = server_state()
    registry, limits = state.registry, state.limits
    prepared = await prepare(registry, neutral(conversation_of(body)), limits)
    original = prompt_length(prepared)
    management = body.context_management
    edit = management.tool_clearing() if management else None
    clearing = clearing_for(edit, body, original) if edit else None
    if clearing is None:
        return PreparedMessage(prepared, original, None if management is None else [])
    prepared.release()
    cleared = await prepare(registry, neutral(conversation_of(body, clearing)), limits)
    saved = original - prompt_length(cleared)
    if saved < max(edit.clear_at_least.value if edit.clear_at_least else 1, 1):
        cleared.release()  # not worth it: the request as sent
        prepared = await prepare(registry, neutral(conversation_of(body)), limits)
        return PreparedMessage(prepared, original, [])
    applied = AnthropicAppliedEdit(
        type=CLEAR_TOOL_USES, cleared_tool_uses=len(clearing.results), cleared_input_tokens=saved
    )
    return PreparedMessage(cleared, original, [applied])


def clearing_for(
    edit: ClearToolUses, body: CountTokensRequest, prompt_tokens: int
) -> Clearing | None:
    """The tool uses `edit` clears, once its trigger is reached: all but the `keep` latest,
    less those of `exclude_tools`; None when it clears none."""
    uses = tool_uses(body.messages)
    measured = len(uses) if edit.trigger.type == "tool_uses" else prompt_tokens
    if measured < edit.trigger.value:
        return None
    kept = set(edit.exclude_tools or [])
    older = [use for use in uses[: max(len(uses) - edit.keep.value, 0)] if use.name not in kept]
    if not older:
        return None
    inputs = edit.clear_tool_inputs
    emptied = [
        use for use in older if inputs is True or (isinstance(inputs, list) and use.name in inputs)
    ]
    return Clearing(
        frozenset(use.id or "" for use in older), frozenset(use.id or "" for use in emptied)
    )


def prompt_length(prepared: Prepared) -> int:
    return len(prepared.engine_request.prompt_tokens or [])
