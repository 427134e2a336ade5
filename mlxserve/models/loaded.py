"""A model in memory as the registry keeps it: its engine, lifecycle clock and admission (429)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mlxserve.engine.base import EngineError, EngineModel
from mlxserve.models.store import ModelRecord

MAX_QUEUED = 256  # requests per model waiting for a decoding slot before new ones get a 429
QUEUE_FULL_RETRY_SECONDS = 2  # the Retry-After of a 429: about one short reply's time


class RegistryError(EngineError):
    def __init__(self, status: int, message: str, code: str, param: str = "model", headers=None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param
        self.headers: dict[str, str] = headers or {}


@dataclass
class LoadedModel:
    record: ModelRecord
    engine: EngineModel
    identifier: str  # the id clients use; the store id unless loaded under another name
    ttl: float | None = None  # idle seconds before unloading
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    jit: bool = False  # loaded because a request named it
    memory_bytes: int = 0  # the estimate the load was admitted with
    max_requests: int | None = None  # running and waiting at once; None: no bound
    rejected_requests: int = 0  # refused because the queue was full
    tool_format: str = ""  # the tool-call family this load was told to use
    family: str = ""  # the tool-call family found for it, once a request asked
    drafts: set[str] = field(default_factory=set)  # draft models counted in memory_bytes
    requested_context: int | None = None  # the context asked for at load; None: the default
    _active_requests: int = field(default=0, repr=False)

    @property
    def active_requests(self) -> int:
        return self._active_requests

    @active_requests.setter
    def active_requests(self, count: int) -> None:
        # The idle clock restarts whenever a request starts or ends.
        self._active_requests = count
        self.last_used = time.monotonic()

    def admit(self) -> Callable[[], None]:
        """Count a request in, or refuse it with a 429 when the model's queue is full; returns
        the request's release, which counts it out once however often it is called."""
        if self.max_requests is not None and self._active_requests >= self.max_requests:
            self.rejected_requests += 1
            raise RegistryError(
                429,
                f"model '{self.identifier}' has {self._active_requests} requests running or "
                f"waiting, its limit (--max-queued); retry shortly",
                "queue_full",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
            )
        self.active_requests += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active_requests -= 1

        return release

    def idle_seconds(self, now: float | None = None) -> float:
        if self._active_requests:
            return 0.0
        return max((now or time.monotonic()) - self.last_used, 0.0)

    def is_expired(self, now: float | None = None) -> bool:
        return (
            self.ttl is not None
            and not self._active_requests
            and (self.idle_seconds(now) >= self.ttl)
        )


def engine_groups(models: Iterable[LoadedModel]) -> list[list[LoadedModel]]:
    """The loaded models by the engine they run on: identifiers that share one are a group."""
    groups: dict[int, list[LoadedModel]] = {}
    for loaded in models:
        groups.setdefault(id(loaded.engine), []).append(loaded)
    return list(groups.values())


def counted_bytes(models: Iterable[LoadedModel]) -> int:
    """The models' memory estimates, each engine counted once however many identifiers share
    it."""
    return sum(max(m.memory_bytes for m in group) for group in engine_groups(models))
