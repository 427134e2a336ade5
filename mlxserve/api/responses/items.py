"""The Responses API's items: input items as the neutral request's turns, and the output items a
response is made of (their models are in answers.py)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable

from mlxserve.api.responses.answers import (
    ResponseCustomToolCallItem,
    ResponseFunctionCallItem,
    ResponseMessageItem,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseReasoningText,
    ResponseSummaryText,
)
from mlxserve.api.responses.custom import INPUT
from mlxserve.api.responses.tools import flat_name
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import (
    ImagePart,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Turn,
)

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
CALLS = ("function_call", "custom_tool_call")
RESULTS = ("function_call_output", "custom_tool_call_output")
# MCP items that are no turn: listings, and approvals (an approved call is an mcp_call item)
MCP_NOT_SHOWN = ("mcp_list_tools", "mcp_approval_request", "mcp_approval_response")


def item_turns(
    items: list[dict], stored_item: Callable[[str], dict | None], param: str = "input"
) -> list[Turn]:
    """Items as turns; an assistant's calls join the assistant turn they follow, as chat
    templates expect; so does the reasoning before them, which the template shows or drops."""
    turns: list[Turn] = []
    for index, item in enumerate(items):
        where = f"{param}[{index}]"
        if item.get("type") == "item_reference":
            item = _referenced(item, stored_item, where)
        if item.get("type") in MCP_NOT_SHOWN:
            continue
        if item.get("type") == "reasoning":
            thought = _reasoning_text(item)
            if thought:
                _add_turn(turns, Turn("assistant", [ReasoningPart(thought)]))
        elif item.get("type") == "mcp_call":
            call, result = _mcp_call_turns(item)
            _add_turn(turns, call)
            turns.append(result)
        else:
            _add_turn(turns, item_turn(item, where))
    return [turn for turn in turns if not _thinking_only(turn)]  # no answer to put it with


def _add_turn(turns: list[Turn], turn: Turn) -> None:
    last = turns[-1] if turns else None
    joins = last is not None and (turn.tool_calls or _thinking_only(last))
    if joins and last.role == turn.role == "assistant":
        last.parts.extend(turn.parts)
    else:
        turns.append(turn)


def _thinking_only(turn: Turn) -> bool:
    return turn.role == "assistant" and all(isinstance(p, ReasoningPart) for p in turn.parts)


def _reasoning_text(item: dict) -> str:
    """A reasoning item's text: its content, else its summary, else the server's own
    `encrypted_content` (base64 of the text; another server's cannot be read)."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        pieces = item.get(key)
        if isinstance(pieces, list):
            text = "".join(
                p.get("text") or "" for p in pieces if isinstance(p, dict) and p.get("type") == kind
            )
            if text:
                return text
    sealed = item.get("encrypted_content")
    try:
        return base64.b64decode(sealed, validate=True).decode() if sealed else ""
    except (ValueError, UnicodeDecodeError, TypeError):
        return ""


def _mcp_call_turns(item: dict) -> tuple[Turn, Turn]:
    """A call the server made to an MCP tool: the model's call, and the result it read."""
    call_id, error = str(item.get("id") or ""), item.get("error")
    arguments = item.get("arguments")
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    call = ToolCallPart(call_id, str(item.get("name") or ""), arguments)
    text = _output_text(item.get("output") or "")
    if isinstance(error, dict):
        detail = error.get("message") or _output_text(error.get("content") or "")
        text = f"error: {detail}"
    return Turn("assistant", [call]), Turn("tool", [ToolResultPart(call_id, text)])


def item_turn(item: dict, where: str) -> Turn:
    """One item (a message, a call, or a call's output) as a turn."""
    kind = item.get("type") or ("message" if "role" in item else None)
    if not isinstance(kind, str | None):
        raise RequestError(400, f"{where}.type: must be a string", f"{where}.type", "invalid_type")
    if kind == "message":
        return _message(item, where)
    if kind in RESULTS:
        result = ToolResultPart(str(item.get("call_id") or ""), _output_text(item.get("output")))
        return Turn("tool", [result])
    if kind in CALLS:
        name = flat_name(item.get("namespace"), str(item.get("name") or ""))
        arguments = item.get("arguments") or "{}"
        if not isinstance(arguments, str):  # a JSON object, as the model would have written it
            arguments = json.dumps(arguments, ensure_ascii=False)
        if kind == "custom_tool_call":  # shown as the function call the model would write
            arguments = json.dumps({INPUT: item.get("input") or ""}, ensure_ascii=False)
        return Turn("assistant", [ToolCallPart(str(item.get("call_id") or ""), name, arguments)])
    if kind is None:
        message = f"{where}: an item needs a type (or a role, for a message)"
        raise RequestError(400, message, f"{where}.type", "missing_required_parameter")
    message = f"{where}.type: unsupported input item type '{kind}'"
    raise RequestError(400, message, f"{where}.type", "unsupported_item_type")


def _referenced(reference: dict, stored_item: Callable[[str], dict | None], where: str) -> dict:
    item = stored_item(str(reference.get("id")))
    if item is None:
        message = f"{where}.id: no stored item with id '{reference.get('id')}'"
        raise RequestError(400, message, f"{where}.id", "item_not_found")
    return item


def _message(item: dict, where: str) -> Turn:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        message = f"{where}.role: unknown role {role!r}"
        raise RequestError(422, message, f"{where}.role", "invalid_value")
    content = item.get("content", "")
    if isinstance(content, str):
        return Turn(ROLES[role], [TextPart(content)])
    if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
        message = f"{where}.content: a string or a list of content parts is required"
        raise RequestError(400, message, f"{where}.content", "invalid_type")
    return Turn(ROLES[role], [_part(part) for part in content])


def _part(part: dict) -> TextPart | ImagePart:
    if part.get("type") == "input_image":
        return ImagePart(str(part.get("image_url") or ""))
    text = part.get("text") or part.get("refusal") or ""
    return TextPart(text if isinstance(text, str) else json.dumps(text))


def _output_text(output) -> str:
    """A call's output: a string, or content parts of which the text is kept."""
    if isinstance(output, list):
        texts = (part.get("text") for part in output if isinstance(part, dict))
        return "".join(text for text in texts if isinstance(text, str))
    return output if isinstance(output, str) else json.dumps(output)


def message_item(
    text: str, item_id: str, status: str = "completed", logprobs: list | None = None
) -> ResponseMessageItem:
    return ResponseMessageItem(
        type="message",
        id=item_id,
        status=status,
        role="assistant",
        content=[output_text(text, logprobs)] if status == "completed" else [],
    )


def output_text(text: str, logprobs: list | None = None) -> ResponseOutputText:
    """`logprobs`: its tokens' log-probabilities when `include` asks for them, else empty."""
    return ResponseOutputText(
        type="output_text", text=text, annotations=[], logprobs=logprobs or []
    )


def reasoning_item(
    text: str, item_id: str, summary: bool = False, sealed: bool = False
) -> ResponseReasoningItem:
    """Reasoning, with the whole of it as its summary when a summary was asked for, and with it
    base64-encoded as `encrypted_content` when that was included (not encrypted: the client
    only has to send it back, and the server never shows earlier reasoning again)."""
    item = ResponseReasoningItem(
        type="reasoning",
        id=item_id,
        summary=[summary_text(text)] if summary and text else [],
        content=[ResponseReasoningText(type="reasoning_text", text=text)] if text else [],
    )
    if sealed:
        item.encrypted_content = base64.b64encode(text.encode()).decode()
    return item


def summary_text(text: str) -> ResponseSummaryText:
    return ResponseSummaryText(type="summary_text", text=text)


def function_call_item(
    call_id: str, name: str, arguments: str, status: str, namespace: str | None = None
) -> ResponseFunctionCallItem:
    item = ResponseFunctionCallItem(
        type="function_call",
        id=f"fc_{uuid.uuid4().hex[:24]}",
        call_id=call_id,
        name=name,
        arguments=arguments,
        status=status,
    )
    if namespace:
        item.namespace = namespace
    return item


def custom_tool_call_item(
    call_id: str, name: str, text: str, namespace: str | None
) -> ResponseCustomToolCallItem:
    item = ResponseCustomToolCallItem(
        type="custom_tool_call",
        id=f"ctc_{uuid.uuid4().hex[:24]}",
        call_id=call_id,
        name=name,
        input=text,
    )
    if namespace:
        item.namespace = namespace
    return item
