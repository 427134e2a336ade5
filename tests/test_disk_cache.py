"""The prompt cache's disk tier: a long prefix read once is reused after a restart (a new engine or
server), gives the same output as reading it again, and a damaged file is ignored, not trusted."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import openai
import pytest

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.disk_prompt_cache import BLOCK, DiskPromptCache
from mlxserve.sampling.params import SamplingParams
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

NO_EOS = SamplingParams(temperature=0, logit_bias={2: -100})  # the tiny vocabulary's <eos>
SHARED = "".join(chr(97 + (i * 7) % 26) for i in range(1300))  # 1,300 byte tokens
FIRST = SHARED + " the first question"
SECOND = SHARED[:1100] + " another question"  # shares two whole blocks with FIRST


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Byte-level, with an 8-token sliding window on every other layer: both kinds of layer."""
    directory = tmp_path_factory.mktemp("tiny-disk") / "model"
    make_tiny_gemma(directory, bytes_vocabulary=True)
    return directory


def run_once(path: Path, prompt: str, disk: DiskPromptCache | None) -> tuple[list[int], int, dict]:
    """A fresh engine (as after a restart): the reply's tokens, its cached prompt tokens and the
    engine's counters."""

    async def scenario():
        model = await MLXModel.load(path, 4096, prompt_cache_bytes=0, disk_cache=disk)
        try:
            ids, stats = [], None
            async for event in model.generate(EngineRequest(prompt, NO_EOS, max_tokens=8)):
                ids += event.token_ids
                stats = event.stats or stats
            return ids, stats.cached_prompt_tokens, await model.engine_counters()
        finally:
            await model.close()

    return asyncio.run(scenario())


def test_a_restart_reads_stored_blocks_and_answers_the_same(tiny, tmp_path):
    reference, _, _ = run_once(tiny, SECOND, None)
    _, cached, counters = run_once(tiny, FIRST, DiskPromptCache(tmp_path, "m", 2**30))
    assert cached == 0
    assert counters["disk_cache_blocks_written"] == len(FIRST) // BLOCK
    assert len(list((tmp_path / "m").glob("*.safetensors"))) == 2
    again, cached, counters = run_once(tiny, SECOND, DiskPromptCache(tmp_path, "m", 2**30))
    assert cached == 2 * BLOCK
    assert counters["disk_cache_blocks_read"] == 2
    assert again == reference


def test_a_damaged_file_is_deleted_and_the_prompt_read_again(tiny, tmp_path):
    reference, _, _ = run_once(tiny, SECOND, None)
    run_once(tiny, FIRST, DiskPromptCache(tmp_path, "m", 2**30))
    files = sorted((tmp_path / "m").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    first_block = files[0]
    data = bytearray(first_block.read_bytes())
    data[-64] ^= 0xFF  # inside the arrays: the file still loads, its checksum fails
    first_block.write_bytes(bytes(data))
    again, cached, _ = run_once(tiny, SECOND, DiskPromptCache(tmp_path, "m", 2**30))
    assert cached == 0
    assert again == reference
    files[1].write_bytes(files[1].read_bytes()[:1000])  # cut short: does not load at all
    with_bad_second, cached, _ = run_once(tiny, SECOND, DiskPromptCache(tmp_path, "m", 2**30))
    assert cached == BLOCK  # the first block (written again above) is used, the second not
    assert with_bad_second == reference


def test_blocks_stay_within_the_byte_bound_and_short_prompts_are_not_stored(tiny, tmp_path):
    run_once(tiny, SHARED[: BLOCK - 10], DiskPromptCache(tmp_path, "m", 2**30))
    assert list((tmp_path / "m").glob("*.safetensors")) == []
    run_once(tiny, FIRST, DiskPromptCache(tmp_path, "m", 2**30))
    one_block = max(p.stat().st_size for p in (tmp_path / "m").glob("*.safetensors"))
    for stale in (tmp_path / "m").glob("*.safetensors"):
        stale.unlink()
    run_once(tiny, FIRST, DiskPromptCache(tmp_path, "m", one_block))
    assert len(list((tmp_path / "m").glob("*.safetensors"))) == 1  # the older block went


def test_the_bound_holds_for_every_models_folder_together(tiny, tmp_path):
    run_once(tiny, FIRST, DiskPromptCache(tmp_path, "a", 2**30))
    one_block = max(p.stat().st_size for p in tmp_path.glob("a/*.safetensors"))
    run_once(tiny, FIRST, DiskPromptCache(tmp_path, "b", one_block))
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 1  # the newest of four
    assert not (tmp_path / "a").exists()  # emptied by another model's writes: removed


def test_a_folder_of_a_converted_again_model_is_removed(tiny, tmp_path):
    kept, changed = tmp_path / "kept.json", tmp_path / "changed.json"
    for config in (kept, changed):
        config.write_text("{}")
    root = tmp_path / "cache"
    run_once(tiny, FIRST, DiskPromptCache(root, "a", 2**30, source=kept))
    run_once(tiny, FIRST, DiskPromptCache(root, "b", 2**30, source=changed))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # written again
    DiskPromptCache(root, "c", 2**30)
    assert sorted(p.name for p in root.iterdir()) == ["a"]
    kept.unlink()  # the model is gone
    DiskPromptCache(root, "c", 2**30)
    assert list(root.iterdir()) == []


def test_the_server_reuses_a_long_system_prompt_after_a_restart(models_dir, twin_ids, tmp_path):
    """Through the OpenAI SDK, on a store's Gemma 3 (tiny weights, the real vocabulary and
    template): a second server process over the same store reports the stored prefix as cached
    tokens."""
    system = " ".join(f"Rule {i}: answer briefly and politely." for i in range(80))
    model = twin_ids["mlx"]
    store_cache = Path(models_dir) / ".prompt-cache"
    replies = []
    for question in ("What is rule 3?", "What is rule 7?"):
        with ServerProcess(models_dir, model=model, engine="mlx") as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
            replies.append(
                client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                    ],
                    max_tokens=2,
                    temperature=0,
                )
            )
    first, second = (reply.usage for reply in replies)
    assert first.prompt_tokens > BLOCK
    assert second.prompt_tokens_details.cached_tokens >= BLOCK
    assert any(store_cache.rglob("*.safetensors"))
