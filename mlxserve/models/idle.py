"""Unloading models idle for their TTL: a monitor that looks once a second while any model is
loaded."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

TTL_CHECK_SECONDS = 1.0


class IdleUnloader:
    def __init__(self, registry: Any):
        self.registry = registry  # the ModelRegistry, which imports this module
        self._monitor: asyncio.Task | None = None

    def watch(self) -> None:
        """Make sure the monitor runs (after a load)."""
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._unload_expired_forever())

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    async def unload_expired(self) -> list[str]:
        """Unload every model whose idle TTL has run out; returns their identifiers."""
        now = time.monotonic()
        registry = self.registry
        expired = [m.identifier for m in registry.loaded.values() if m.is_expired(now)]
        for identifier in expired:
            log.info("%s was idle for its TTL; unloading", identifier)
            await registry.unload(identifier)
        return expired

    async def _unload_expired_forever(self) -> None:
        while True:
            await asyncio.sleep(TTL_CHECK_SECONDS)
            try:
                await self.unload_expired()
            except Exception:  # noqa: BLE001 - a failed close must not stop later unloads
                log.exception("unloading an idle model failed")
