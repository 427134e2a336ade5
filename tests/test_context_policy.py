"""One context-length policy for every engine: the requested length (a load's, else the
server's --context-length), else 4096, capped by the model's trained maximum only when known."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mlxserve.models.memory import estimate_memory
from mlxserve.models.options import RegistryOptions
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import write_manifest
from tests.tiny_models import make_tiny_gemma


def loaded_context(models_dir, trained_max: int, server: int | None, request: int | None) -> int:
    record = make_tiny_gemma(models_dir / "test" / "tiny-gemma")
    write_manifest(record.directory, dataclasses.replace(record, max_context_length=trained_max))
    registry = ModelRegistry(models_dir, RegistryOptions(engine="mlx", context_length=server))

    async def load() -> int:
        try:
            loaded = await registry.load(record.id, context_length=request)
            assert estimate_memory(loaded.record, request or server).context_length == (
                loaded.engine.context_length
            )
            return loaded.engine.context_length
        finally:
            await registry.close()

    return asyncio.run(load())


@pytest.mark.parametrize(
    ("trained_max", "server", "request_length", "expected"),
    [
        (0, 8192, None, 8192),  # an unknown maximum does not cap the server's setting
        (0, None, None, 4096),
        (0, 8192, 1024, 1024),  # a load request's length wins over the server's
        (512, 8192, None, 512),
        (512, None, 100, 100),
    ],
)
def test_mlx_engine_loads_the_policy_length(
    tmp_path, trained_max, server, request_length, expected
):
    assert loaded_context(tmp_path, trained_max, server, request_length) == expected
