"""The MLX engine against mlx-lm's own server on the same model, backend and requests.

Both servers get identical streaming /v1/completions requests (greedy, EOS banned so every request
produces exactly the asked-for tokens, no repeat penalty: mlxserve's default of 1.1 would otherwise
make it do work mlx-lm, whose default is none, does not). Reported: single-stream decode tok/s, time
to first token, aggregate tok/s with 1, 4, 8 and 16 concurrent streams, and a repeated long prompt
(prompt cache).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from tests.server import ServerProcess, free_port

OPENBLAS = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
STREAMS = (1, 4, 8, 16)
BANNED = {"1": -100, "106": -100}  # Gemma's EOS and end-of-turn, so lengths are exact
LONG_PROMPT = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(30))


def stream_completion(base_url: str, model: str, prompt: str, tokens: int) -> dict:
    """Send one streaming request; return client-side timings."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,  # mlx-lm ignores this field and applies no penalty by default
        "stream": True,
        "logit_bias": BANNED,
    }
    start = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("text"):
                    arrivals.append(time.perf_counter())
    ttft = arrivals[0] - start
    decode = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return {
        "ttft_s": ttft,
        "decode_tok_s": decode,
        "chunks": len(arrivals),
        "total_s": arrivals[-1] - start,
        "tokens": tokens,
    }


def concurrent_throughput(base_url: str, model: str, streams: int, tokens: int) -> float:
    prompts = [f"Story number {i}: once upon a time" for i in range(streams)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda p: stream_completion(base_url, model, p, tokens), prompts))
    return streams * tokens / (time.perf_counter() - start)


class MlxLmServer:
    """mlx-lm's reference server on the same model directory, with the same BLAS."""

    def __init__(self, model_path: str, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ}
        if os.path.exists(OPENBLAS):
            env["LD_PRELOAD"] = OPENBLAS
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlx_lm.server",
                "--model",
                model_path,
                "--port",
                str(self.port),
                *extra_args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.model = model_path

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stream_completion(self.base_url, self.model, "Hi", 2)
                return
            except (httpx.HTTPError, IndexError):
                time.sleep(1)
        raise TimeoutError("mlx_lm.server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def measure(base_url: str, model: str, tokens: int, repeats: int) -> dict:
    stream_completion(base_url, model, "Warm up", 4)
    singles = [
        stream_completion(base_url, model, "The capital of France is", tokens)
        for _ in range(repeats)
    ]
    first_long = stream_completion(base_url, model, LONG_PROMPT, 2)
    repeat_long = stream_completion(base_url, model, LONG_PROMPT + " More:", 2)
    return {
        "decode_tok_s": statistics.median(s["decode_tok_s"] for s in singles),
        "ttft_short_s": statistics.median(s["ttft_s"] for s in singles),
        "ttft_long_first_s": first_long["ttft_s"],
        "ttft_long_repeat_s": repeat_long["ttft_s"],
        "aggregate_tok_s": {
            n: concurrent_throughput(base_url, model, n, tokens // 2) for n in STREAMS
        },
    }


def run(args) -> dict:
    tokens = getattr(args, "iterations", None) or 32
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    model_path = find_model(models_dir, model_id).path
    with ServerProcess(models_dir, model=model_id, engine="mlx") as server:
        ours = measure(server.base_url, model_id, tokens, repeats=3)
    peer_server = MlxLmServer(model_path)
    try:
        peer_server.wait()
        peer = measure(peer_server.base_url, model_path, tokens, repeats=3)
    finally:
        peer_server.stop()
    ratios = {
        "decode": ours["decode_tok_s"] / peer["decode_tok_s"],
        "ttft_short": ours["ttft_short_s"] / peer["ttft_short_s"],
        **{
            f"aggregate_{n}": ours["aggregate_tok_s"][n] / peer["aggregate_tok_s"][n]
            for n in STREAMS
        },
    }
    print(f"{'':28}{'mlxserve':>12}{'mlx_lm.server':>15}{'ratio':>8}")
    print(
        f"{'decode tok/s':28}{ours['decode_tok_s']:12.2f}{peer['decode_tok_s']:15.2f}"
        f"{ratios['decode']:8.2f}"
    )
    print(
        f"{'ttft short prompt (s)':28}{ours['ttft_short_s']:12.3f}{peer['ttft_short_s']:15.3f}"
        f"{ratios['ttft_short']:8.2f}"
    )
    for key in ("ttft_long_first_s", "ttft_long_repeat_s"):
        print(f"{key:28}{ours[key]:12.3f}{peer[key]:15.3f}")
    for n in STREAMS:
        print(
            f"{f'aggregate tok/s, {n} streams':28}{ours['aggregate_tok_s'][n]:12.2f}"
            f"{peer['aggregate_tok_s'][n]:15.2f}{ratios[f'aggregate_{n}']:8.2f}"
        )
    return {"mlxserve": ours, "mlx_lm_server": peer, "ratios": ratios}
