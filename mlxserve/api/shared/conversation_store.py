"""Finished conversations kept for later requests: `previous_response_id` on /v1/responses
and /api/v1/chat, and `item_reference` items. Bounded by count and by bytes, as a stored turn
may hold a long prompt or an image's whole data URL."""

from __future__ import annotations

import json
from collections import OrderedDict

from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ImagePart, TextPart, ToolCallPart, ToolResultPart, Turn

STORED_RESPONSES = 256
STORED_BYTES = 256 * 1024**2


class ConversationStore:
    """Finished conversations by response id, so `previous_response_id` can continue (or
    branch) one, and their items by id, for `item_reference`; the oldest go first. Each also
    keeps the MCP servers whose tools its conversation has listed already."""

    def __init__(self, capacity: int = STORED_RESPONSES, max_bytes: int = STORED_BYTES):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._entries: OrderedDict[str, tuple[list[Turn], dict[str, dict], frozenset[str]]] = (
            OrderedDict()
        )
        self._sizes: dict[str, int] = {}
        self.bytes = 0  # about what the stored conversations hold

    def put(
        self,
        response_id: str,
        turns: list[Turn],
        items: list[dict] = (),
        listed: frozenset[str] = frozenset(),
    ) -> None:
        by_id = {item["id"]: item for item in items if isinstance(item.get("id"), str)}
        self._entries[response_id] = (turns, by_id, listed)
        self._sizes[response_id] = size = _size_of(turns) + len(json.dumps(list(by_id.values())))
        self.bytes += size
        while len(self._entries) > self.capacity or (
            self.bytes > self.max_bytes and len(self._entries) > 1
        ):
            oldest, _ = self._entries.popitem(last=False)
            self.bytes -= self._sizes.pop(oldest)

    def conversation(self, response_id: str) -> list[Turn]:
        """The turns of a stored response, its own reply included."""
        if response_id not in self._entries:
            raise RequestError(
                404,
                f"no stored response with id '{response_id}'",
                "previous_response_id",
                "response_not_found",
            )
        return self._entries[response_id][0]

    def item(self, item_id: str) -> dict | None:
        """An input or output item of a stored response, the newest first."""
        for _, items, _ in reversed(self._entries.values()):
            if item_id in items:
                return items[item_id]
        return None

    def listed(self, response_id: str | None) -> frozenset[str]:
        """The MCP servers listed in the stored conversation (none for an unknown id)."""
        entry = self._entries.get(response_id) if response_id else None
        return entry[2] if entry else frozenset()


def _size_of(turns: list[Turn]) -> int:
    """About the bytes of a conversation's text, images and calls."""
    total = 0
    for turn in turns:
        for part in turn.parts:
            if isinstance(part, TextPart):
                total += len(part.text)
            elif isinstance(part, ImagePart):
                total += len(part.url)
            elif isinstance(part, ToolCallPart):
                total += len(part.arguments) + len(part.name)
            elif isinstance(part, ToolResultPart):
                total += len(part.content)
    return total
