"""The MLX engine's batch is bounded by the KV tokens memory holds, not a fixed number of
sequences: half the memory left after the model (one full context included) and its prompt
cache."""

from __future__ import annotations

from pathlib import Path

from mlxserve.engine.base import PROMPT_CACHE_BYTES
from mlxserve.models import memory
from mlxserve.models.store import find_model

GIB = 1024**3


def test_kv_budget_grows_with_free_memory(models_dir, default_ids):
    record = find_model(Path(models_dir), default_ids["mlx"])
    context = 4096
    estimate = memory.estimate_memory(record, context)
    one_context = estimate.kv_cache_bytes
    floor = estimate.total_bytes + PROMPT_CACHE_BYTES

    def budget(available):
        return memory.mlx_kv_budget_tokens(record, context, available, PROMPT_CACHE_BYTES)

    assert budget(floor) == budget(floor // 2) == context  # the one context the estimate holds
    assert budget(floor + 2 * 3 * one_context) == 4 * context  # half the rest: three more
    assert budget(floor + 512 * GIB) > budget(floor + 256 * GIB)
    assert budget(None) is None
