"""A request's events on their way from the runner thread to its client. The runner never waits
for a client (one slow reader must not stall the batch), so a client that reads slower than the
model writes finds what it has not read merged into one event: it holds its reply's text, not an
object per token, however far behind it is."""

from __future__ import annotations

import asyncio
from collections import deque

from mlxserve.engine.base import GenerationEvent


class _Unread:
    """Text events not yet read, kept as pieces so merging costs no copying."""

    def __init__(self, event: GenerationEvent):
        self.texts, self.token_ids, self.stats = [event.text], list(event.token_ids), event.stats
        self.logprobs = list(event.logprobs)

    def add(self, event: GenerationEvent) -> None:
        self.texts.append(event.text)
        self.token_ids.extend(event.token_ids)
        self.logprobs.extend(event.logprobs)
        self.stats = event.stats

    def event(self) -> GenerationEvent:
        return GenerationEvent("".join(self.texts), self.token_ids, self.stats, self.logprobs)


class EventHandoff:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._unread: deque[_Unread | BaseException] = deque()
        self._arrived = asyncio.Event()

    def put_threadsafe(self, event: GenerationEvent | BaseException) -> None:
        """Called on the runner thread; the event joins the queue on the event loop's."""
        self._loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: GenerationEvent | BaseException) -> None:
        last = self._unread[-1] if self._unread else None
        if isinstance(event, BaseException):
            self._unread.append(event)
        elif isinstance(last, _Unread) and last.stats is None:
            last.add(event)
        else:
            self._unread.append(_Unread(event))
        self._arrived.set()

    async def get(self) -> GenerationEvent | BaseException:
        while not self._unread:
            self._arrived.clear()
            await self._arrived.wait()
        unread = self._unread.popleft()
        return unread.event() if isinstance(unread, _Unread) else unread
