"""The llama.cpp engine through mlxserve against the same llama.cpp server queried directly.

Both sides run the default GGUF model with identical llama.cpp settings (LlamaServerProcess with
the context length and slot count mlxserve's engine uses) and get identical streaming
/v1/completions requests: greedy, EOS and end-of-turn banned so every request yields exactly the
asked-for tokens. Every prompt starts with a fresh nonce so llama.cpp's prompt cache cannot favour
either side. Measurements alternate between the two servers to share out background load.

    python scripts/bench.py llamacpp [--iterations N] [--models-dir DIR]
    python -m scripts.benchmarks.llamacpp [--iterations N] [--models-dir DIR]

`--iterations` is the number of repetitions behind each median (default 3).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.engine.llamacpp.model import resolve_context_length
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from tests.server import ServerProcess

DECODE_TOKENS = 128
STREAMS = 4
PARALLEL = 4  # LlamaCppModel.load's default slot count
BANNED = {"1": -100, "106": -100}  # Gemma's EOS and end-of-turn, so lengths are exact
LONG_BODY = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(24))
_nonce = itertools.count()


def fresh_prompt(text: str) -> str:
    """A prompt no earlier request shares a prefix with (beyond BOS)."""
    return f"[{next(_nonce)}-{time.time_ns() % 1_000_000}] {text}"


def stream_completion(base_url: str, model: str, prompt: str, tokens: int) -> dict:
    """One streaming /v1/completions request; client-side timings and the server's token count."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": BANNED,
    }
    start = time.perf_counter()
    first = last = None
    completion_tokens = None
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if (chunk.get("usage") or {}).get("completion_tokens"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            if any(choice.get("text") for choice in chunk.get("choices") or []):
                first = first or time.perf_counter()
                last = time.perf_counter()
    tokens_seen = completion_tokens or tokens
    return {
        "ttft_s": first - start,
        "decode_tok_s": (tokens_seen - 1) / (last - first) if last > first else 0.0,
        "completion_tokens": tokens_seen,
        "total_s": last - start,
    }


def count_tokens(base_url: str, text: str) -> int:
    response = httpx.post(f"{base_url}/tokenize", json={"content": text, "add_special": True})
    return len(response.json()["tokens"])


def aggregate_throughput(base_url: str, model: str, streams: int, tokens: int) -> float:
    prompts = [fresh_prompt(f"Story number {i}: once upon a time") for i in range(streams)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda p: stream_completion(base_url, model, p, tokens), prompts))
    return sum(r["completion_tokens"] for r in results) / (time.perf_counter() - start)


MEASUREMENTS = {
    "decode_tok_s": lambda url, model: stream_completion(
        url, model, fresh_prompt("The capital of France is"), DECODE_TOKENS
    )["decode_tok_s"],
    "ttft_short_s": lambda url, model: stream_completion(url, model, fresh_prompt("Hello"), 2)[
        "ttft_s"
    ],
    "ttft_long_s": lambda url, model: stream_completion(url, model, fresh_prompt(LONG_BODY), 2)[
        "ttft_s"
    ],
    f"aggregate_{STREAMS}_tok_s": lambda url, model: aggregate_throughput(
        url, model, STREAMS, DECODE_TOKENS
    ),
}


def measure_side_by_side(servers: dict[str, str], model: str, repeats: int) -> dict:
    """Each measurement runs on both servers back to back, in alternating order, so background
    load hits both alike; medians per server."""
    samples = {name: {key: [] for key in MEASUREMENTS} for name in servers}
    for url in servers.values():
        stream_completion(url, model, fresh_prompt("Warm up"), 4)
    for repeat in range(repeats):
        for index, (key, measure) in enumerate(MEASUREMENTS.items()):
            names = list(servers)
            for name in names if (repeat + index) % 2 == 0 else reversed(names):
                samples[name][key].append(measure(servers[name], model))
    return {
        name: {key: statistics.median(values) for key, values in by_key.items()}
        for name, by_key in samples.items()
    }


def ratios(ours: dict, direct: dict) -> dict:
    return {
        "decode": ours["decode_tok_s"] / direct["decode_tok_s"],
        "ttft_short_extra_ms": 1000 * (ours["ttft_short_s"] - direct["ttft_short_s"]),
        "ttft_long_extra_ms": 1000 * (ours["ttft_long_s"] - direct["ttft_long_s"]),
        f"aggregate_{STREAMS}": ours[f"aggregate_{STREAMS}_tok_s"]
        / direct[f"aggregate_{STREAMS}_tok_s"],
    }


def print_table(ours: dict, direct: dict, compared: dict) -> None:
    print(f"{'':28}{'mlxserve':>12}{'llama.cpp':>12}{'mlxserve vs direct':>22}")
    rows = [
        ("decode tok/s", "decode_tok_s", f"{compared['decode']:.3f}x", 2),
        ("ttft short prompt (s)", "ttft_short_s", f"{compared['ttft_short_extra_ms']:+.1f} ms", 3),
        (
            "ttft ~300-token prompt (s)",
            "ttft_long_s",
            f"{compared['ttft_long_extra_ms']:+.1f} ms",
            3,
        ),
        (
            f"aggregate tok/s, {STREAMS} streams",
            f"aggregate_{STREAMS}_tok_s",
            f"{compared[f'aggregate_{STREAMS}']:.3f}x",
            2,
        ),
    ]
    for label, key, ratio, digits in rows:
        print(f"{label:28}{ours[key]:12.{digits}f}{direct[key]:12.{digits}f}{ratio:>22}")


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 3
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "llamacpp")
    record = find_model(models_dir, model_id)
    direct = LlamaServerProcess(
        record.directory / record.gguf_file,
        context_length=resolve_context_length(record, None),
        parallel=PARALLEL,
    )
    with direct, ServerProcess(models_dir, model=model_id, engine="llamacpp") as ours:
        servers = {"mlxserve": ours.base_url, "direct": direct.base_url}
        long_tokens = count_tokens(direct.base_url, fresh_prompt(LONG_BODY))
        results = measure_side_by_side(servers, model_id, repeats)
    compared = ratios(results["mlxserve"], results["direct"])
    print_table(results["mlxserve"], results["direct"], compared)
    return {**results, "ratios": compared, "repeats": repeats, "long_prompt_tokens": long_tokens}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--models-dir", type=Path, default=None)
    print(json.dumps(run(parser.parse_args()), indent=2))
