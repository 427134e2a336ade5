"""mlxserve's own HTTP client for llama.cpp against httpx, on the same llama.cpp child.

Each streamed token reaches mlxserve as one small server-sent event; on a small machine the CPU
spent receiving it is taken from llama.cpp's compute threads. This measures the CPU this process
spends (time.process_time: the llama.cpp child is not counted) per streamed token and per
/tokenize call, for each client, in alternating rounds.

    python scripts/bench.py client [--iterations N] [--models-dir DIR]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from mlxserve.engine.llamacpp import client
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.store import find_model

TOKENS = 256
BODY = {
    "prompt": "Once upon a time",
    "n_predict": TOKENS,
    "stream": True,
    "temperature": 0,
    "top_k": 1,
    "logit_bias": [[1, False], [106, False]],  # no EOS or end of turn: exact lengths
    "return_tokens": True,
}
TOKENIZE = {"content": "The quick brown fox " * 20, "add_special": True, "parse_special": True}


async def own_stream(url: str) -> int:
    count = 0
    async for chunk in client.post_event_stream(f"{url}/completion", BODY):
        count += len(chunk.get("tokens") or [])
    return count


async def httpx_stream(session: httpx.AsyncClient, url: str) -> int:
    count = 0
    async with session.stream("POST", f"{url}/completion", json=BODY) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                count += len(orjson.loads(line[6:]).get("tokens") or [])
    return count


async def cpu_ms(coroutine_factory, repeat: int = 1) -> tuple[float, int]:
    start, count = time.process_time(), 0
    for _ in range(repeat):
        count += await coroutine_factory() or 1
    return (time.process_time() - start) * 1000, count


async def measure(url: str, rounds: int) -> dict:
    results = {k: [] for k in ("own_token", "httpx_token", "own_tokenize", "httpx_tokenize")}
    async with httpx.AsyncClient(timeout=None) as session:
        await own_stream(url)  # warm both paths and llama.cpp's cache
        await httpx_stream(session, url)
        for _ in range(rounds):
            ms, n = await cpu_ms(lambda: own_stream(url))
            results["own_token"].append(ms / n)
            ms, n = await cpu_ms(lambda: httpx_stream(session, url))
            results["httpx_token"].append(ms / n)
            ms, n = await cpu_ms(lambda: own_tokenize(url), repeat=20)
            results["own_tokenize"].append(ms / n)
            ms, n = await cpu_ms(lambda: httpx_tokenize(session, url), repeat=20)
            results["httpx_tokenize"].append(ms / n)
    return {key: statistics.median(values) for key, values in results.items()}


async def own_tokenize(url: str) -> None:
    await client.request_json("POST", f"{url}/tokenize", TOKENIZE)


async def httpx_tokenize(session: httpx.AsyncClient, url: str) -> None:
    (await session.post(f"{url}/tokenize", json=TOKENIZE)).raise_for_status()


def run(args) -> dict:
    rounds = getattr(args, "iterations", None) or 5
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    record = find_model(models_dir, ensure_default_model(models_dir, "llamacpp"))
    with LlamaServerProcess(gguf_file_of(record), context_length=1024, parallel=1) as server:
        result = asyncio.run(measure(server.base_url, rounds))
    for kind, label in (("token", "streamed token"), ("tokenize", "/tokenize call")):
        own, other = result[f"own_{kind}"], result[f"httpx_{kind}"]
        print(f"CPU per {label}: own client {own:.3f} ms, httpx {other:.3f} ms")
    return result
