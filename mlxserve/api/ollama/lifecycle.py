"""Ollama's model lifecycle on the registry: a model loaded for a request with its `num_ctx`
(and timed, for `load_duration`), and `keep_alive` applied once the request ends: 0 unloads the
model, a negative value keeps it for good, seconds set its idle time to live."""

from __future__ import annotations

import time

from mlxserve.models.registry import ModelRegistry


async def load_for(
    registry: ModelRegistry, model_id: str, context_length: int | None, keep: float | None
) -> float:
    """Seconds spent loading `model_id` for this request (0 when it was loaded already)."""
    if model_id in registry.loaded or model_id in registry.loading:
        return 0.0
    started = time.monotonic()
    ttl = keep if keep is not None and keep > 0 else None
    loaded = await registry.load_on_request(model_id, ttl=ttl, context_length=context_length)
    return 0.0 if loaded is None else time.monotonic() - started


async def apply_keep_alive(registry: ModelRegistry, identifier: str, keep: float | None) -> bool:
    """Keep or unload the model as the request asked; True when it was unloaded now. A model
    other requests still use is unloaded by the idle monitor once they end."""
    loaded = registry.loaded.get(identifier)
    if keep is None or loaded is None:
        return False
    if keep == 0 and not loaded.active_requests:
        await registry.unload(identifier)
        return True
    loaded.ttl = None if keep < 0 else keep
    loaded.last_used = time.monotonic()
    registry.idle.watch()
    return False
