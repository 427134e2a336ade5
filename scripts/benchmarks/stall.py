"""How long a stream already decoding waits while a long new prompt (1,400 words) arrives.

One streaming request decodes; once it has produced 8 tokens a second request sends the long
prompt for one token. Reported for each server: the running stream's median gap between tokens
(a decode step) and its worst gap while the long prompt is read, and the long prompt's time to
first token. mlxserve's MLX engine and mlx-lm's own server run the same model directory on the
same backend. Then the MLX engine alone (in this process) with each prefill chunk size, which is
the measurement behind the engine's PREFILL_CHUNK.

    python scripts/bench.py stall [--models-dir DIR]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving import runner
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from mlxserve.sampling.params import SamplingParams
from scripts.benchmarks.mlx_engine import BANNED, MlxLmServer
from tests.server import ServerProcess

LONG_WORDS = " ".join(f"word{i % 97}" for i in range(1400))
CHUNKS = (64, 128, 256, 512)
STARTED_AFTER = 8  # tokens the running stream has before the long prompt is sent


def stream_arrivals(base_url: str, model: str, prompt: str, tokens: int, arrivals: list) -> None:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "logit_bias": BANNED,
    }
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                arrivals.append(time.perf_counter())


def stall(base_url: str, model: str) -> dict:
    stream_arrivals(base_url, model, "Warm up", 2, [])
    running: list[float] = []
    thread = threading.Thread(
        target=stream_arrivals, args=(base_url, model, "Once upon a time", 120, running)
    )
    thread.start()
    while len(running) < STARTED_AFTER:
        time.sleep(0.005)
    sent = time.perf_counter()
    long_prompt: list[float] = []
    stream_arrivals(base_url, model, LONG_WORDS, 1, long_prompt)
    thread.join()
    return summary(running, sent, long_prompt[0])


def summary(running: list[float], sent: float, answered: float) -> dict:
    gaps = [b - a for a, b in zip(running, running[1:], strict=False)]
    during = [
        b - a for a, b in zip(running, running[1:], strict=False) if b > sent and a < answered
    ]
    return {
        "decode_gap_s": statistics.median(gaps[:STARTED_AFTER]),
        "worst_gap_s": max(during, default=answered - sent),
        "long_prompt_ttft_s": answered - sent,
    }


async def engine_stall(path: Path, chunk: int) -> dict:
    runner.PREFILL_CHUNK = chunk
    model = await MLXModel.load(path, 4096, prompt_cache_bytes=0)
    try:
        greedy = SamplingParams(temperature=0, logit_bias={int(k): v for k, v in BANNED.items()})

        async def arrivals_of(prompt: str, tokens: int, into: list) -> None:
            request = EngineRequest(prompt=prompt, sampling=greedy, max_tokens=tokens)
            async for event in model.generate(request):
                if event.token_ids:
                    into.append(time.perf_counter())

        running: list[float] = []
        task = asyncio.create_task(arrivals_of("Once upon a time", 120, running))
        while len(running) < STARTED_AFTER:
            await asyncio.sleep(0.005)
        sent, long_prompt = time.perf_counter(), []
        await arrivals_of(LONG_WORDS, 1, long_prompt)
        await task
        return summary(running, sent, long_prompt[0])
    finally:
        await model.close()


def run(args) -> dict:
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    path = find_model(models_dir, model_id).path
    with ServerProcess(models_dir, model=model_id, engine="mlx") as server:
        ours = stall(server.base_url, model_id)
    peer_server = MlxLmServer(path)
    try:
        peer_server.wait()
        peer = stall(peer_server.base_url, path)
    finally:
        peer_server.stop()
    chosen = runner.PREFILL_CHUNK
    sweep = {chunk: asyncio.run(engine_stall(Path(path), chunk)) for chunk in CHUNKS}
    runner.PREFILL_CHUNK = chosen
    print(f"{'':26}{'decode gap s':>14}{'worst gap s':>13}{'long TTFT s':>13}")
    rows = [("mlxserve", ours), ("mlx_lm.server", peer)]
    rows += [(f"engine, chunk {chunk}", result) for chunk, result in sweep.items()]
    for name, row in rows:
        print(
            f"{name:26}{row['decode_gap_s']:14.3f}{row['worst_gap_s']:13.3f}"
            f"{row['long_prompt_ttft_s']:13.3f}"
        )
    ratio = peer["worst_gap_s"] / ours["worst_gap_s"]
    print(f"worst gap, mlx_lm.server / mlxserve: {ratio:.1f}x (chunk {chosen})")
    return {"mlxserve": ours, "mlx_lm_server": peer, "engine_chunks": sweep, "ratio": ratio}
