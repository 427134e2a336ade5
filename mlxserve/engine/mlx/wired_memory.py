"""Wired memory on Apple silicon. Under pressure macOS may page out or compress a model's Metal
buffers, and every step then waits for them; mlx-lm wires up to the GPU's recommended working
set while it generates. A server keeps its models loaded, so the limit is raised while any MLX
model is loaded in this process and given back when the last one is unloaded."""

from __future__ import annotations

import logging
import threading

import mlx.core as mx

log = logging.getLogger(__name__)
NEAR_THE_LIMIT = 0.9  # of the recommended working set: past it, steps may wait on paging

_lock = threading.Lock()
_loaded_models = 0


def wire() -> None:
    """On a runner's thread once its model is loaded."""
    global _loaded_models
    if not mx.metal.is_available():
        return
    limit = mx.device_info()["max_recommended_working_set_size"]
    in_use = mx.get_active_memory()
    if in_use > NEAR_THE_LIMIT * limit:
        log.warning(
            "the loaded models hold %.1f GB, near the %.1f GB Metal can keep wired: decoding "
            "may slow down as buffers are paged (a smaller model or quantization helps)",
            in_use / 1e9,
            limit / 1e9,
        )
    with _lock:
        _loaded_models += 1
        if _loaded_models == 1:
            mx.set_wired_limit(limit)


def unwire() -> None:
    """On a runner's thread as its model is released."""
    global _loaded_models
    if not mx.metal.is_available():
        return
    with _lock:
        _loaded_models -= 1
        if _loaded_models == 0:
            mx.synchronize()
            mx.set_wired_limit(0)
