"""Aggregate throughput under concurrency: 1, 2, 4, 8 and 16 streams at once.

Every stream asks for the same number of tokens (greedy, end of turn banned, so lengths are
exact); aggregate tok/s = all tokens / wall time from the first request to the last token.
- MLX: mlxserve's MLX engine against mlx-lm's own server and vllm-mlx (continuous batching, up
  to 16 sequences; its `vllm-mlx` command from $VLLM_MLX or PATH, skipped when absent), same
  model directory and backend (OpenBLAS preloaded for all).
- llama.cpp at 8 streams: mlxserve's llama.cpp engine against a llama.cpp server started with
  the same options (context, slots) and called directly; the same llama.cpp requests, fresh
  prompts each round so neither side gets the other's cache.

    python scripts/bench.py concurrency [--iterations TOKENS] [--models-dir DIR]
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from scripts.benchmarks.llamacpp import (
    PARALLEL,
    aggregate_throughput,
    direct_server,
    http_target,
)
from scripts.benchmarks.mlx_engine import OPENBLAS, MlxLmServer, stream_completion
from tests.server import ServerProcess, free_port

STREAMS = (1, 2, 4, 8, 16)
VLLM_MLX = os.environ.get("VLLM_MLX") or shutil.which("vllm-mlx")
LLAMACPP_STREAMS = 8


def throughput(base_url: str, model: str, streams: int, tokens: int) -> float:
    """Tokens received (one per streamed chunk) over the wall time of all streams."""
    prompts = [f"Story number {i}: once upon a time" for i in range(streams)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        runs = list(pool.map(lambda p: stream_completion(base_url, model, p, tokens), prompts))
    return sum(run["chunks"] for run in runs) / (time.perf_counter() - started)


def mlx_row(base_url: str, model: str, tokens: int) -> dict[int, float]:
    throughput(base_url, model, 2, 4)  # warm up
    return {n: throughput(base_url, model, n, tokens) for n in STREAMS}


class VllmMlxServer:
    """vllm-mlx's OpenAI server on the same model directory, if it is installed."""

    def __init__(self, model_path: str):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [
            *(VLLM_MLX, "serve", model_path, "--host", "127.0.0.1", "--port", str(self.port)),
            *("--offline", "--continuous-batching", "--max-num-seqs", str(max(STREAMS))),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if os.path.exists(OPENBLAS):
            env["LD_PRELOAD"] = OPENBLAS
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(f"{self.base_url}/v1/models", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(1)
        raise RuntimeError("vllm-mlx did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def peer_row(server, model: str, tokens: int) -> dict[int, float]:
    try:
        server.wait()
        return mlx_row(server.base_url, model, tokens)
    finally:
        server.stop()


def run(args) -> dict:
    tokens = getattr(args, "iterations", None) or 32
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    path = find_model(models_dir, model_id).path
    rows = {}
    with ServerProcess(models_dir, model=model_id, engine="mlx") as server:
        rows["mlxserve"] = mlx_row(server.base_url, model_id, tokens)
    rows["mlx_lm.server"] = peer_row(MlxLmServer(path), path, tokens)
    if VLLM_MLX:
        rows["vllm-mlx"] = peer_row(VllmMlxServer(path), path, tokens)
    else:
        print("vllm-mlx is not installed: compared with mlx_lm.server alone")
    print(f"{'aggregate tok/s':18}" + "".join(f"{f'{n} streams':>12}" for n in STREAMS))
    for name, row in rows.items():
        print(f"{name:18}" + "".join(f"{row[n]:12.1f}" for n in STREAMS))
    for peer in rows:
        if peer != "mlxserve":
            ratios = "".join(f"{rows['mlxserve'][n] / rows[peer][n]:12.2f}" for n in STREAMS)
            print(f"{'vs ' + peer:18}{ratios}")
    return {"mlx": rows, "llamacpp": llamacpp_row(models_dir, tokens * 2)}


def llamacpp_row(models_dir: Path, tokens: int) -> dict:
    model_id = ensure_default_model(models_dir, "llamacpp")
    direct = direct_server(find_model(models_dir, model_id))
    with direct, ServerProcess(models_dir, model=model_id, engine="llamacpp") as ours:
        targets = {
            "direct": http_target(direct.base_url, model_id),
            "mlxserve": http_target(ours.base_url, model_id),
        }
        results = {name: [] for name in targets}
        for round_number in range(3):  # alternating, so a slow phase of the machine hits both
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for name in order:
                results[name].append(aggregate_throughput(targets[name], LLAMACPP_STREAMS, tokens))
    best = {name: max(values) for name, values in results.items()}
    ratio = best["mlxserve"] / best["direct"]
    print(
        f"llama.cpp, {LLAMACPP_STREAMS} streams over {PARALLEL} slots: mlxserve "
        f"{best['mlxserve']:.1f} tok/s, llama.cpp direct {best['direct']:.1f} tok/s ({ratio:.2f}x)"
    )
    return {"streams": LLAMACPP_STREAMS, "tok_s": best, "ratio": ratio}
