"""Speculative decoding on a repetitive workload: rewrite a paragraph with one word changed.

The reply copies most of the prompt, which prompt lookup drafts from. Measured through each
server's HTTP API, greedy, the same number of tokens: mlxserve's MLX engine with and without
prompt lookup beside mlx-lm's own server (which has no prompt lookup), on the same backend; then
mlxserve's llama.cpp engine with and without `--prompt-lookup` (llama.cpp's n-gram drafts). The
replies must be the same text; the ratio is tokens per second against plain decoding.

    python scripts/bench.py speculative [--models-dir DIR] [--iterations N]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from scripts.benchmarks.mlx_engine import MlxLmServer
from tests.server import ServerProcess
from tests.test_speculative import REWRITE

TOKENS = 96


def completion(base_url: str, path: str, body: dict) -> tuple[dict, float]:
    started = time.perf_counter()
    reply = httpx.post(f"{base_url}{path}", json=body, timeout=600).json()
    return reply, time.perf_counter() - started


def measure(base_url: str, model: str, repeats: int, path="/api/v0/completions", **fields) -> dict:
    body = {
        "model": model,
        "prompt": REWRITE,
        "max_tokens": TOKENS,
        "temperature": 0,
        "repeat_penalty": 1.0,  # mlx-lm's default: a penalty would also fight the copying
        **fields,
    }
    completion(base_url, path, {**body, "max_tokens": 2})  # warm up
    runs = [completion(base_url, path, body) for _ in range(repeats)]
    reply, _ = runs[0]
    seconds = statistics.median(elapsed for _, elapsed in runs)
    tokens = reply["usage"]["completion_tokens"]
    stats = reply.get("stats") or {}
    drafted = stats.get("total_draft_tokens_count")
    return {
        "text": reply["choices"][0]["text"],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "acceptance": stats["accepted_draft_tokens_count"] / drafted if drafted else None,
    }


def run(args) -> dict:
    repeats = args.iterations or 3
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    mlx_id = ensure_default_model(models_dir, "mlx")
    gguf_id = ensure_default_model(models_dir, "llamacpp")
    results = {}
    with ServerProcess(models_dir, model=mlx_id, engine="mlx") as server:
        results["mlx plain"] = measure(server.base_url, mlx_id, repeats)
        results["mlx lookup"] = measure(server.base_url, mlx_id, repeats, prompt_lookup=True)
    path = find_model(models_dir, mlx_id).path
    peer = MlxLmServer(path)
    try:
        peer.wait()
        results["mlx_lm.server"] = measure(peer.base_url, path, repeats, path="/v1/completions")
    finally:
        peer.stop()
    for name, extra in (("llama.cpp plain", ()), ("llama.cpp lookup", ("--prompt-lookup",))):
        with ServerProcess(
            models_dir, model=gguf_id, engine="llamacpp", extra_args=extra
        ) as server:
            results[name] = measure(server.base_url, gguf_id, repeats)
    report(results)
    return results


def report(results: dict) -> None:
    print(f"{'':20}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'accepted':>10}")
    for name, row in results.items():
        accepted = "" if row["acceptance"] is None else f"{row['acceptance']:.0%}"
        print(
            f"{name:20}{row['tokens']:8}{row['seconds']:9.2f}{row['tokens_per_second']:9.1f}"
            f"{accepted:>10}"
        )
    for engine, peer in (("mlx", "mlx_lm.server"), ("llama.cpp", None)):
        lookup, plain = results[f"{engine} lookup"], results[f"{engine} plain"]
        speedup = lookup["tokens_per_second"] / plain["tokens_per_second"]
        line = f"{engine}: prompt lookup {speedup:.2f}x plain decoding"
        if peer:
            line += (
                f", {lookup['tokens_per_second'] / results[peer]['tokens_per_second']:.2f}x {peer}"
            )
        print(f"{line}; same text: {lookup['text'] == plain['text']}")
