"""An Anthropic request's messages as the pipeline's turns.

System messages become system turns at their place (until a later user message clears one
that asks for it); tool_addition, tool_removal and tool_reference blocks decide which tools the
reply is offered (a tool with defer_loading only once something names it); blocks that only
Anthropic's servers produce are skipped; tool results a context edit clears are replaced by a
placeholder. Every block's type is checked against where it sits, and a fault is named by its
place in the request (`messages.2.content.0.type`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlxserve.api.anthropic.protocol import (
    SERVER_BLOCKS,
    ContentBlock,
    CountTokensRequest,
    ImageSource,
    Message,
    Tool,
    validated,
)
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import (
    ImagePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Turn,
)

CLEARED_RESULT = "[tool result cleared to save context]"
TOOL_CHANGES = frozenset({"tool_addition", "tool_removal"})
SKIPPED = SERVER_BLOCKS | {"redacted_thinking"}  # sealed thinking cannot be read
MESSAGE_BLOCKS = SKIPPED | TOOL_CHANGES | {
    "thinking",
    "text", "image", "document", "search_result", "tool_use", "tool_result", "compaction",
}  # fmt: skip
SYSTEM_BLOCKS = TOOL_CHANGES | {"text"}
RESULT_BLOCKS = frozenset({"text", "image", "document", "search_result", "tool_reference"})
KNOWN_BLOCKS = MESSAGE_BLOCKS | RESULT_BLOCKS


@dataclass(frozen=True)
class Clearing:
    """What a clear_tool_uses edit removes, by tool_use id."""

    results: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset()


@dataclass
class Conversation:
    turns: list[Turn]
    tools: list[Tool]  # those offered to the reply, in the order they were declared or defined
    effort: str | None = None  # a system message's output_config.effort for the turn answered


@dataclass
class ToolSet:
    """The tools declared (in `tools` or defined inline since) and those offered now."""

    known: dict[str, Tool] = field(default_factory=dict)
    offered: set[str] = field(default_factory=set)

    @classmethod
    def declared(cls, tools: list[Tool]) -> ToolSet:
        known = {tool.name: tool for tool in tools}
        return cls(known, {tool.name for tool in tools if not tool.defer_loading})

    def offer(self, name: str | None, where: str) -> None:
        self.offered.add(self._known(name, where))

    def withdraw(self, name: str | None, where: str) -> None:
        self.offered.discard(self._known(name, where))

    def define(self, tool: Tool) -> None:
        self.known[tool.name] = tool
        self.offered.add(tool.name)

    @property
    def tools(self) -> list[Tool]:
        return [tool for name, tool in self.known.items() if name in self.offered]

    def _known(self, name: str | None, where: str) -> str:
        if name not in self.known:
            message = f"{where}: no tool '{name}' in tools or defined earlier in messages"
            raise RequestError(400, message, where, "unknown_tool")
        return name


def conversation_of(request: CountTokensRequest, clearing: Clearing = Clearing()) -> Conversation:
    """The request's turns, the tools offered at their end, and the effort of the turn being
    answered; `clearing` names the tool uses a context edit clears."""
    tools = ToolSet.declared(request.tools or [])
    turns = []
    if request.system:
        turns.append(Turn("system", [TextPart(_system_text(request.system))]))
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=-1)
    effort = None
    for index, message in enumerate(request.messages):
        reader = MessageReader(f"messages.{index}", tools, clearing)
        if message.role != "system":
            turns += reader.turns(message)
            continue
        current = index > last_user  # a system message belongs to the user turn it follows
        turns += reader.system_turns(message, current or message.clear_at != "next_user_message")
        if current and message.output_config and message.output_config.effort:
            effort = message.output_config.effort
    management = request.context_management
    _clear_thinking(turns, management.thinking_turns_kept() if management else None)
    return Conversation(turns, tools.tools, effort)


def _clear_thinking(turns: list[Turn], kept: int | None) -> None:
    """Thinking left only in the `kept` latest assistant turns that have some (None: all)."""
    if kept is None:
        return
    thinking = [turn for turn in turns if turn.role == "assistant" and turn.reasoning]
    for turn in thinking[: max(len(thinking) - kept, 0)]:
        turn.parts = [part for part in turn.parts if not isinstance(part, ReasoningPart)]


def tool_uses(messages: list[Message]) -> list[ContentBlock]:
    """The tool_use blocks of the conversation, oldest first."""
    return [
        block
        for message in messages
        if message.role == "assistant" and not isinstance(message.content, str)
        for block in message.content
        if block.type == "tool_use"
    ]


@dataclass
class MessageReader:
    where: str  # the message's place in the request
    tools: ToolSet
    clearing: Clearing

    def turns(self, message: Message) -> list[Turn]:
        """A user or assistant message: its tool results become tool turns first, as chat
        templates expect them."""
        if isinstance(message.content, str):
            return [Turn(message.role, [TextPart(message.content)])]
        tool_turns, parts = [], []
        for index, block in enumerate(message.content):
            where = f"{self.where}.content.{index}"
            _check_type(block, MESSAGE_BLOCKS, where, "a message")
            if block.type == "tool_result":
                tool_turns.append(Turn("tool", self._tool_result(block, where)))
            else:
                parts += self._parts_of(block, where)
        return tool_turns + ([Turn(message.role, parts)] if parts or not tool_turns else [])

    def system_turns(self, message: Message, shown: bool) -> list[Turn]:
        """A system message: its text as a system turn while shown; its tool changes hold from
        here on either way."""
        if isinstance(message.content, str):
            texts = [message.content]
        else:
            texts = []
            for index, block in enumerate(message.content):
                where = f"{self.where}.content.{index}"
                _check_type(block, SYSTEM_BLOCKS, where, "a system message")
                if block.type == "text":
                    texts.append(block.text or "")
                else:
                    self._change_tools(block, where)
        text = "\n".join(text for text in texts if text)
        return [Turn("system", [TextPart(text)])] if shown and text else []

    def _parts_of(self, block: ContentBlock, where: str) -> list[Part]:
        if block.type == "text":
            return [TextPart(block.text or "")]
        if block.type == "thinking" and block.thinking:
            return [ReasoningPart(block.thinking)]
        if block.type == "image":
            source = validated(ImageSource, block.source or {}, f"{where}.source")
            return [ImagePart(source.as_url)]
        if block.type == "tool_use":
            cleared = block.id in self.clearing.inputs
            arguments = json.dumps({} if cleared else block.input or {})
            return [ToolCallPart(block.id or "", block.name or "", arguments)]
        if block.type == "search_result":
            return [TextPart(_search_result_text(block))]
        if block.type == "compaction" and isinstance(block.content, str):
            return [TextPart(block.content)]  # the summary of the messages it replaces
        if block.type == "document":
            message = f"{where}: document blocks are not supported; send the text as a text block"
            raise RequestError(400, message, where, "unsupported_content")
        if block.type in TOOL_CHANGES:
            self._change_tools(block, where)
        return []

    def _tool_result(self, block: ContentBlock, where: str) -> list[Part]:
        """The result's text, then its images (a screenshot), which the model sees as it sees a
        user's."""
        pieces, images = [], []
        if isinstance(block.content, str) or block.content is None:
            pieces.append(block.content or "")
        else:
            for index, inner in enumerate(block.content):
                inner_where = f"{where}.content.{index}"
                _check_type(inner, RESULT_BLOCKS, inner_where, "a tool_result")
                if inner.type == "image":
                    images += self._parts_of(inner, inner_where)
                else:
                    pieces.append(self._result_piece(inner, inner_where))
        text = "\n".join(piece for piece in pieces if piece)
        if block.tool_use_id in self.clearing.results:
            text, images = CLEARED_RESULT, []
        return [ToolResultPart(block.tool_use_id or "", text), *images]

    def _result_piece(self, block: ContentBlock, where: str) -> str:
        if block.type == "tool_reference":
            # A client-side tool search's answer: the tool is offered from now on, and the
            # model reads its definition here.
            self.tools.offer(block.tool_name, f"{where}.tool_name")
            return json.dumps(self.tools.known[block.tool_name].as_function()["function"])
        if block.type == "search_result":
            return _search_result_text(block)
        return block.text or ""  # documents in results are not read

    def _change_tools(self, block: ContentBlock, where: str) -> None:
        change = block.tool
        if change is None:
            raise RequestError(400, f"{where}.tool: required", f"{where}.tool", "invalid_value")
        where = f"{where}.tool"
        if change.type == "tool_reference":
            if block.type == "tool_addition":
                self.tools.offer(change.name, f"{where}.name")
            else:
                self.tools.withdraw(change.name, f"{where}.name")
        elif change.type == "tool_definition" and block.type == "tool_addition":
            self.tools.define(validated(Tool, change.definition, f"{where}.definition"))
        elif change.type not in ("mcp_tool_reference", "mcp_toolset_reference"):
            message = f"{where}.type: unknown tool change '{change.type}' in a {block.type}"
            raise RequestError(400, message, f"{where}.type", "invalid_value")
        # MCP tools live on servers this server does not connect to: their changes do nothing


def _check_type(block: ContentBlock, allowed: frozenset[str], where: str, place: str) -> None:
    if block.type in allowed:
        return
    if block.type in KNOWN_BLOCKS:
        message = f"{where}.type: '{block.type}' blocks are not allowed in {place}"
    else:
        message = f"{where}.type: unknown content block type '{block.type}'"
    raise RequestError(400, message, f"{where}.type", "invalid_value")


def _system_text(system: str | list[ContentBlock]) -> str:
    if isinstance(system, str):
        return system
    for index, block in enumerate(system):
        _check_type(block, frozenset({"text"}), f"system.{index}", "system")
    return "\n".join(block.text or "" for block in system)


def _search_result_text(block: ContentBlock) -> str:
    return f"{block.title} ({block.source})\n{_text_of(block)}"


def _text_of(block: ContentBlock) -> str:
    if isinstance(block.content, list):
        return "\n".join(inner.text or "" for inner in block.content if inner.type == "text")
    return block.content or ""
