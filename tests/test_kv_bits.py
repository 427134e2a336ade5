"""A quantized KV cache (`--kv-bits`): fewer bytes per token as MLX allocates them, the real
Gemma's greedy tokens kept, and continuous batching, the prompt cache (memory and disk),
speculative decoding and the llama.cpp engine all working with it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlx.core as mx
import pytest
from mlx_lm.models.cache import RotatingKVCache

from mlxserve.engine.base import EngineRequest, Speculation
from mlxserve.engine.kv_quantization import KVQuantization, llamacpp_cache_args
from mlxserve.engine.llamacpp.model import LlamaCppModel
from mlxserve.engine.llamacpp.process import LlamaServerError, LlamaServerProcess
from mlxserve.engine.mlx.architectures.text_model import TextModel
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.disk_prompt_cache import BLOCK, DiskPromptCache
from mlxserve.models import memory
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.store import find_model
from mlxserve.sampling.params import SamplingParams
from tests.metrics import model_metric
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

GREEDY = SamplingParams(temperature=0)
NO_EOS = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias={2: -100.0})
EIGHT, FOUR = KVQuantization(8), KVQuantization(4)
# Measured on Gemma 3 270M (docs/models.md): with 8-bit KV the first 43 to 48 of 48 greedy tokens
# of three chat prompts equal the full-precision cache's; 4-bit parts within 0 to 8 tokens.
AGREEING_TOKENS = 32
GEMMA_PROMPT = "<start_of_turn>user\nWrite a short poem about the sea.<end_of_turn>\n"
GEMMA_PROMPT += "<start_of_turn>model\n"
WORD_PROMPTS = ["w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15", "w20 w21", "w30 w31 w32 w33", "w40"]
SHARED = "".join(chr(97 + (i * 7) % 26) for i in range(1100))  # two disk blocks of bytes


@pytest.fixture(scope="module")
def gemma(models_dir, default_ids) -> Path:
    return Path(models_dir) / default_ids["mlx"]


@pytest.fixture(scope="module")
def tiny_words(tmp_path_factory):
    """64-element heads, so keys and values quantize in groups of 64."""
    return make_tiny_gemma(tmp_path_factory.mktemp("kv-words") / "test" / "tiny", head_dim=64)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("kv-bytes") / "model"
    make_tiny_gemma(directory, bytes_vocabulary=True, head_dim=64)
    return directory


def generate(path: Path, runs: list[EngineRequest], **load_options) -> tuple[list, dict]:
    """Each request's token ids and last stats, one after another on a fresh engine; with the
    engine's counters at the end."""

    async def scenario():
        model = await MLXModel.load(path, 4096, **load_options)
        try:
            results = []
            for request in runs:
                ids, stats = [], None
                async for event in model.generate(request):
                    ids += event.token_ids
                    stats = event.stats or stats
                results.append((ids, stats))
            return results, await model.engine_counters()
        finally:
            await model.close()

    return asyncio.run(scenario())


def test_gemma_greedy_tokens_with_8_bit_kv_agree_with_full_precision(gemma):
    request = EngineRequest(GEMMA_PROMPT, GREEDY, max_tokens=AGREEING_TOKENS)
    [(full, _)], full_counters = generate(gemma, [request])
    [(eight, _)], eight_counters = generate(gemma, [request], kv_quantization=EIGHT)
    assert eight == full
    # the reply's cache, kept for reuse, is the quantized one (its 3 full-context layers of 18
    # are; the sliding-window layers stay at full precision)
    assert eight_counters["prompt_cache_bytes"] < 0.9 * full_counters["prompt_cache_bytes"]


def allocated_bytes_per_token(model, quantization: KVQuantization | None) -> float:
    """Bytes the cache's full-context layers allocate for each of 256 prompt tokens, read from
    their arrays (a sliding-window layer stays at its window's size, whatever the context)."""
    text_model = TextModel(model, quantization)
    cache = text_model.make_cache()
    model(mx.arange(256)[None], cache=cache)
    growing = [layer for layer in cache if not isinstance(layer, RotatingKVCache)]
    mx.eval([layer.state for layer in growing])
    return sum(layer.nbytes for layer in growing) / 256


def test_kv_bytes_per_token_as_mlx_allocates_them(gemma_mlx_lm, models_dir, default_ids):
    model, _ = gemma_mlx_lm
    full = allocated_bytes_per_token(model, None)
    eight = allocated_bytes_per_token(model, EIGHT) / full
    four = allocated_bytes_per_token(model, FOUR) / full
    assert eight <= 0.55 and four <= 0.3
    # the memory estimate counts the same bytes per element
    record = find_model(Path(models_dir), default_ids["mlx"])
    estimated = [memory.kv_element_bytes(record)]
    for bits in (8, 4):
        record.kv_bits, record.kv_group_size = bits, 64
        estimated.append(memory.kv_element_bytes(record))
    assert [estimated[1] / estimated[0], estimated[2] / estimated[0]] == [
        pytest.approx(eight, rel=0.01),
        pytest.approx(four, rel=0.01),
    ]


def test_batched_and_alone_give_the_same_tokens(tiny_words):
    """Prompts read together, a sequence joining a running batch and rows leaving it."""

    async def decode(quantization, batch_size):
        model = await MLXModel.load(
            tiny_words.directory, 512, max_batch_size=batch_size, kv_quantization=quantization
        )
        requests = [
            EngineRequest(p, NO_EOS, max_tokens=40 + 8 * n) for n, p in enumerate(WORD_PROMPTS)
        ]
        try:
            if batch_size == 1:
                results = [await collect_text(model, r) for r in requests]
            else:
                first = asyncio.ensure_future(collect_text(model, requests[0]))
                while (await model.engine_counters())["decoding"] == 0:
                    await asyncio.sleep(0.001)
                results = await asyncio.gather(first, *map(partial_collect(model), requests[1:]))
            return results, await model.engine_counters()
        finally:
            await model.close()

    for quantization in (EIGHT, FOUR):
        alone, _ = asyncio.run(decode(quantization, 1))
        together, counters = asyncio.run(decode(quantization, 8))
        assert together == alone
        assert counters["joined_running_batch"] >= 1 and counters["most_decoding"] >= 3
    full, _ = asyncio.run(decode(None, 1))
    assert asyncio.run(decode(FOUR, 1))[0] != full  # the 4-bit cache is really in use


async def collect_text(model: MLXModel, request: EngineRequest) -> list[int]:
    ids = []
    async for event in model.generate(request):
        ids += event.token_ids
    return ids


def partial_collect(model: MLXModel):
    return lambda request: collect_text(model, request)


def test_prompt_cache_reuses_a_quantized_prefix(tiny_words):
    """A second turn starts from the first turn's quantized cache and says what reading it
    again says."""

    async def scenario():
        model = await MLXModel.load(tiny_words.directory, 512, kv_quantization=EIGHT)
        try:
            first = await collect_text(model, EngineRequest(WORD_PROMPTS[0], NO_EOS, max_tokens=5))
            follow_up = f"{WORD_PROMPTS[0]} {model.tokenizer.decode(first)} w40 w41"
            request = EngineRequest(follow_up, NO_EOS, max_tokens=5)
            ids, stats = [], None
            async for event in model.generate(request):
                ids += event.token_ids
                stats = event.stats or stats
            return request, ids, stats.cached_prompt_tokens
        finally:
            await model.close()

    follow_up, ids, cached = asyncio.run(scenario())
    assert cached >= len(WORD_PROMPTS[0].split())
    follow_up.prompt_tokens = None
    [(uncached, stats)], _ = generate(tiny_words.directory, [follow_up], kv_quantization=EIGHT)
    assert ids == uncached and stats.cached_prompt_tokens == 0


def test_disk_cache_stores_and_reads_quantized_blocks(tiny_bytes, tmp_path):
    first = EngineRequest(SHARED + " one", NO_EOS, max_tokens=6)
    second = EngineRequest(SHARED + " two", NO_EOS, max_tokens=6)
    options = {"kv_quantization": EIGHT, "prompt_cache_bytes": 0}
    [(reference, _)], _ = generate(tiny_bytes, [second], **options)
    _, written = generate(
        tiny_bytes, [first], disk_cache=DiskPromptCache(tmp_path, "m", 2**30), **options
    )
    assert written["disk_cache_blocks_written"] == 2
    second.prompt_tokens = None  # tokenized again by the fresh engine
    [(again, stats)], read = generate(
        tiny_bytes, [second], disk_cache=DiskPromptCache(tmp_path, "m", 2**30), **options
    )
    assert read["disk_cache_blocks_read"] == 2 and stats.cached_prompt_tokens == 2 * BLOCK
    assert again == reference


def test_speculative_decoding_gives_the_same_tokens(tiny_bytes):
    """The model drafts for itself while its sampler bans tokens the drafts keep proposing:
    accepted drafts and rejected ones, each rejection taking the quantized cache back."""
    prompt = "abcabcabc " * 30 + "xyz xyz abc"
    banned = SamplingParams(temperature=0, logit_bias={2: -100, 67: -100, 255: -100})
    itself = Speculation(draft_model="itself", draft_path=str(tiny_bytes))
    plain = EngineRequest(prompt, banned, max_tokens=40)
    drafted = EngineRequest(prompt, banned, max_tokens=40, speculation=itself)
    [(expected, _)], _ = generate(tiny_bytes, [plain], kv_quantization=EIGHT)
    [(ids, stats)], counters = generate(tiny_bytes, [drafted], kv_quantization=EIGHT)
    assert ids == expected and counters["speculative_steps"] > 0
    assert stats.draft.accepted > 0 and stats.draft.rejected > 0


def test_four_streams_decode_batched_on_the_server(tiny_words, tmp_path_factory):
    store = Path(tiny_words.directory).parent.parent
    second = make_tiny_gemma(store / "test" / "tiny-two", seed=1, head_dim=64)
    args = ["--kv-bits", "8", "--context-length", "256"]
    with ServerProcess(store, model=tiny_words.id, engine="mlx", extra_args=args) as server:
        # Long enough that the four overlap however late the last one arrives on a busy machine.
        body = {"model": tiny_words.id, "max_tokens": 160, "temperature": 0}
        body["logit_bias"] = {"2": -100}

        def complete(prompt: str) -> int:
            answer = httpx.post(
                f"{server.base_url}/v1/completions", json={**body, "prompt": prompt}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["usage"]["completion_tokens"]

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(complete, WORD_PROMPTS)) == [160] * 4
        most = model_metric(server.base_url, "mlxserve_engine_most_decoding", tiny_words.id)
        assert most == 4
        load = {"model": second.id, "kv_bits": 4}
        loaded = httpx.post(f"{server.base_url}/api/v1/models/load", json=load, timeout=120)
        assert loaded.status_code == 200, loaded.text
        models = httpx.get(f"{server.base_url}/api/v0/models", timeout=10).json()["data"]
        bits = {entry["id"]: entry.get("kv_bits") for entry in models}
        assert (bits[tiny_words.id], bits[second.id]) == (8, 4)


def test_a_group_size_the_heads_cannot_hold_is_refused(tmp_path):
    narrow = make_tiny_gemma(tmp_path / "test" / "narrow")  # 16-element heads
    # A tiny model to start on: with none named, the server would convert the default Gemma.
    served = make_tiny_gemma(tmp_path / "test" / "served")
    with ServerProcess(tmp_path, model=served.id, engine="mlx") as server:
        body = {"model": narrow.id, "kv_bits": 8}
        answer = httpx.post(f"{server.base_url}/api/v0/models/load", json=body, timeout=60)
        assert answer.status_code == 400
        assert "16-element attention heads" in answer.json()["error"]["message"]


def test_llama_cpp_starts_with_a_quantized_cache_and_answers(models_dir, default_ids):
    record = find_model(Path(models_dir), default_ids["llamacpp"])
    gguf = gguf_file_of(record)

    async def scenario():
        model = await LlamaCppModel.load(record.id, gguf, 512, parallel=1, kv_bits=8)
        try:
            request = EngineRequest(GEMMA_PROMPT, GREEDY, max_tokens=4)
            return "".join([event.text async for event in model.generate(request)]), model.kv_bits
        finally:
            await model.close()

    text, bits = asyncio.run(scenario())
    assert text.strip() and bits == 8
    # llama.cpp reads the cache types: a quantized V cache without flash attention is refused
    without_flash_attention = [*llamacpp_cache_args(8)[:-1], "off"]
    refused = LlamaServerProcess(
        gguf, context_length=512, parallel=1, extra_args=without_flash_attention
    )
    with pytest.raises(LlamaServerError, match="exited with code"):
        refused.start(timeout=60)
