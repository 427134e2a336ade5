"""The MLX engine's batch size comes from the memory left after the model, not a fixed number."""

from __future__ import annotations

from pathlib import Path

import httpx

from mlxserve.engine.base import PROMPT_CACHE_BYTES
from mlxserve.models import memory
from mlxserve.models.store import find_model
from tests.server import ServerProcess

GIB = 1024**3


def test_batch_size_grows_with_free_memory_within_its_bounds(models_dir, default_ids):
    record = find_model(Path(models_dir), default_ids["mlx"])
    estimate = memory.estimate_memory(record, 4096)
    # Gemma 3 270M in float32: 18 layers x 1 KV head x 256 x keys and values x 4 bytes a token
    assert estimate.kv_cache_bytes == 18 * 256 * 2 * 4 * 4096
    floor = estimate.total_bytes + PROMPT_CACHE_BYTES
    per_sequence = estimate.kv_cache_bytes

    def batch(available):
        return memory.mlx_batch_size(record, 4096, available, PROMPT_CACHE_BYTES)

    assert batch(floor) == 1
    assert batch(floor + 2 * 5 * per_sequence) == 6  # half the spare memory: 5 more sequences
    assert batch(floor + 512 * GIB) == memory.MAX_MLX_BATCH
    assert batch(None) == memory.DEFAULT_MLX_BATCH


def test_the_server_loads_with_the_batch_its_memory_allows(models_dir, default_ids):
    model = default_ids["mlx"]
    record = find_model(Path(models_dir), model)
    estimate = memory.estimate_memory(record, 4096)
    limit = estimate.total_bytes + PROMPT_CACHE_BYTES + 2 * 2 * estimate.kv_cache_bytes
    env = {memory.MEMORY_LIMIT_ENV: str(limit)}
    with ServerProcess(models_dir, model=model, engine="mlx", env=env) as server:
        listed = httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()
    entry = next(m for m in listed["models"] if m["key"] == model)
    assert entry["loaded_instances"][0]["config"]["parallel"] == 3
