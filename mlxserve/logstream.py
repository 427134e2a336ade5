"""The request log behind `mlxserve log stream`: every generation publishes what the model
received (the exact formatted prompt and sampling parameters) and what it produced, with stats.

One bus per process, like the `logging` module's loggers: generation code publishes without a
reference to the app, and each `/api/v0/log/stream` client subscribes. Subscribers have queues
bounded in records and bytes; when a reader falls behind, its oldest records are dropped and
counted, so a slow reader never holds memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict

from mlxserve.engine.base import IMAGE_MARKER, EngineRequest, GenerationEvent, GenerationStats

QUEUE_SIZE = 256
QUEUE_BYTES = 32 * 1024**2  # per reader: a few long prompts, not hundreds


class Subscription:
    """A reader's queue, bounded both in records and in bytes: records carry whole prompts
    (megabytes for a long agent conversation), so a count alone would not bound memory."""

    def __init__(self, max_records: int, max_bytes: int = QUEUE_BYTES):
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue(max_records)
        self.max_bytes = max_bytes
        self.dropped = 0  # records lost because the reader fell behind
        self._sizes: collections.deque[int] = collections.deque()  # of the queued records
        self._bytes = 0

    def offer(self, record: dict | None) -> None:
        size = _size_of(record)
        while not self.queue.empty() and (self.queue.full() or self._bytes + size > self.max_bytes):
            self.queue.get_nowait()
            self._bytes -= self._sizes.popleft()
            self.dropped += 1
        self.queue.put_nowait(record)
        self._sizes.append(size)
        self._bytes += size

    async def next_record(self) -> dict | None:
        """The next record, or None once the bus has closed."""
        record = await self.queue.get()
        self._bytes -= self._sizes.popleft()
        if record is None:
            self.offer(None)  # stays closed for any later call
            return None
        if self.dropped:
            record = {**record, "dropped_before": self.dropped}
            self.dropped = 0
        return record


def _size_of(record: dict | None) -> int:
    """About the bytes a record holds: its prompt and output dominate."""
    if record is None:
        return 0
    prompt = record.get("prompt") or ""
    return len(prompt) * (1 if isinstance(prompt, str) else 8) + len(record.get("output") or "")


class LogBus:
    """Publish/subscribe of log records within the event loop's thread."""

    def __init__(self, max_records: int = QUEUE_SIZE, max_bytes: int = QUEUE_BYTES):
        self.max_records, self.max_bytes = max_records, max_bytes
        self._subscriptions: set[Subscription] = set()
        self.closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, record: dict) -> None:
        for subscription in self._subscriptions:
            subscription.offer(record)

    def close(self) -> None:
        """End every feed, now and for later subscribers: the server is shutting down."""
        self.closed = True
        for subscription in self._subscriptions:
            subscription.offer(None)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription(self.max_records, self.max_bytes)
        if self.closed:
            subscription.offer(None)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)


bus = LogBus()


def stats_record(stats: GenerationStats) -> dict:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cached_prompt_tokens": stats.cached_prompt_tokens,
        "tokens_per_second": stats.tokens_per_second,
        "time_to_first_token": stats.time_to_first_token,
        "generation_time": stats.generation_time,
        "stop_reason": stats.stop_reason,
    }


def _images_field(request: EngineRequest) -> dict:
    """The prompt marks where each image sits; this says which image each mark stands for."""
    if not request.images:
        return {}
    images = [
        {"marker": IMAGE_MARKER, "width": image.pixels.width, "height": image.pixels.height,
         "sha256": image.digest}
        for image in request.images
    ]  # fmt: skip
    return {"images": images}


class GenerationLog:
    """The records of one generation, used as a context manager around it: `request` on
    entry, `response` (with output and stats, or the error) on exit.

    Costs nothing when no one is subscribed at the start: the output is then not collected."""

    def __init__(self, header: dict, request: EngineRequest, log_bus: LogBus = bus):
        self._bus = log_bus
        self._active = log_bus.subscriber_count > 0
        self._parts: list[str] = []
        self._stats: GenerationStats | None = None
        self._header = header  # the response id, model and endpoint
        self._request = request

    def __enter__(self) -> GenerationLog:
        if self._active:
            self._publish(
                "request",
                prompt=self._request.prompt,
                sampling=asdict(self._request.sampling),
                max_tokens=self._request.max_tokens,
                stop=self._request.stop,
                **_images_field(self._request),
            )
        return self

    def add(self, event: GenerationEvent) -> None:
        if self._active:
            self._parts.append(event.text)
            self._stats = event.stats or self._stats

    def __exit__(self, exc_type, exc, traceback) -> None:
        if not self._active:
            return
        stats = stats_record(self._stats) if self._stats else None
        extra = {}
        if isinstance(exc, Exception):
            extra = {"error": f"{type(exc).__name__}: {exc}"}
        elif stats is None:
            extra = {"error": "cancelled: the client disconnected"}
        self._publish("response", output="".join(self._parts), stats=stats, **extra)

    def _publish(self, kind: str, **fields) -> None:
        self._bus.publish({"type": kind, "time": time.time(), **self._header, **fields})
