"""The llama.cpp engine through mlxserve against the same llama.cpp server queried directly.

Three targets with identical llama.cpp settings (the context length and slot count mlxserve's
engine uses): `direct`, a llama.cpp server queried over its own /v1/completions; `mlxserve`, the
real `mlxserve serve --engine llamacpp` over /v1/completions; and `engine`, LlamaCppModel driven
in this process (no HTTP API layer), which splits mlxserve's overhead between engine and API.

Requests are greedy with EOS and end-of-turn banned, so each yields exactly the asked-for tokens.
Every target gets the same sampling settings spelled out: mlxserve's defaults (LM Studio's repeat
penalty 1.1) differ from llama.cpp's (no penalty), and llama.cpp queried directly with mlxserve's
settings decoded 4-6% slower than with its own, a cost that would be charged to mlxserve otherwise.
Every prompt starts with a fresh nonce so llama.cpp's prompt cache cannot favour any target, and
each measurement runs on all targets back to back, in rotating order, so background load on a
shared machine hits them alike.

    python scripts/bench.py llamacpp [--iterations N] [--models-dir DIR]
    python -m scripts.benchmarks.llamacpp [--iterations N] [--models-dir DIR]

`--iterations` is the number of repetitions behind each median (default 3).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.llamacpp.model import LlamaCppModel
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.memory import automatic_context_length
from mlxserve.models.store import ModelRecord, find_model
from mlxserve.sampling.params import DEFAULT_REPEAT_PENALTY, SamplingParams
from tests.server import ServerProcess

DECODE_TOKENS = 128
STREAMS = 4
PARALLEL = 4  # LlamaCppModel.load's default slot count
BANNED = {1: -100, 106: -100}  # Gemma's EOS and end-of-turn, so lengths are exact
# Both sides apply the penalty over the last 64 tokens by default (DEFAULT_REPEAT_LAST_N).
SAMPLING = {"temperature": 0, "top_k": 1, "repeat_penalty": DEFAULT_REPEAT_PENALTY}
LONG_BODY = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(24))
_nonce = itertools.count()

Complete = Callable[[str, int], dict]  # (prompt, max tokens) -> timings


def fresh_prompt(text: str) -> str:
    """A prompt no earlier request shares a prefix with (beyond BOS)."""
    return f"[{next(_nonce)}-{time.time_ns() % 1_000_000}] {text}"


def timings(start: float, first: float, last: float, tokens: int) -> dict:
    return {
        "ttft_s": first - start,
        "decode_tok_s": (tokens - 1) / (last - first) if last > first else 0.0,
        "completion_tokens": tokens,
    }


def http_target(base_url: str, model: str) -> Complete:
    """Streaming /v1/completions; times the arrival of text chunks at the client."""
    # One client (a new one per request costs ~25 ms of TLS setup), but a new connection per
    # request: llama.cpp may close an idle keep-alive connection just as a request reuses it.
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))

    def complete(prompt: str, tokens: int) -> dict:
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": tokens,
            **SAMPLING,
            "stream": True,
            "stream_options": {"include_usage": True},
            "logit_bias": {str(k): v for k, v in BANNED.items()},
        }
        start = time.perf_counter()
        first = last = None
        usage_tokens = None
        with client.stream("POST", f"{base_url}/v1/completions", json=body) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage_tokens = (chunk.get("usage") or {}).get("completion_tokens") or usage_tokens
                if any(choice.get("text") for choice in chunk.get("choices") or []):
                    first = first or time.perf_counter()
                    last = time.perf_counter()
        return timings(start, first, last, usage_tokens or tokens)

    return complete


class EngineTarget:
    """LlamaCppModel on its own event loop thread, called from the benchmark's threads."""

    def __init__(self, record: ModelRecord):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        context = automatic_context_length(record)
        load = LlamaCppModel.load(record.id, gguf_file_of(record), context, parallel=PARALLEL)
        self.model = self.call(load)

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def complete(self, prompt: str, tokens: int) -> dict:
        return self.call(self._complete(prompt, tokens))

    async def _complete(self, prompt: str, tokens: int) -> dict:
        sampling = SamplingParams(**SAMPLING, logit_bias=BANNED)
        request = EngineRequest(prompt=prompt, sampling=sampling, max_tokens=tokens)
        start = time.perf_counter()
        first = last = None
        async for event in self.model.generate(request):
            if event.text:
                first = first or time.perf_counter()
                last = time.perf_counter()
            if event.is_final:
                return timings(start, first, last, event.stats.completion_tokens)
        raise RuntimeError("the stream ended without stats")

    def close(self) -> None:
        self.call(self.model.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def aggregate_throughput(complete: Complete, streams: int, tokens: int) -> float:
    prompts = [fresh_prompt(f"Story number {i}: once upon a time") for i in range(streams)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda prompt: complete(prompt, tokens), prompts))
    return sum(r["completion_tokens"] for r in results) / (time.perf_counter() - start)


AGGREGATE = f"aggregate_{STREAMS}_tok_s"
MEASUREMENTS: dict[str, Callable[[Complete], float]] = {
    "decode_tok_s": lambda complete: complete(
        fresh_prompt("The capital of France is"), DECODE_TOKENS
    )["decode_tok_s"],
    "ttft_short_s": lambda complete: complete(fresh_prompt("Hello"), 2)["ttft_s"],
    "ttft_long_s": lambda complete: complete(fresh_prompt(LONG_BODY), 2)["ttft_s"],
    AGGREGATE: lambda complete: aggregate_throughput(complete, STREAMS, DECODE_TOKENS),
}


def measure_side_by_side(targets: dict[str, Complete], repeats: int) -> dict:
    """Each measurement on every target back to back, rotating the order: per target, the
    samples of each measurement in repeat order."""
    samples = {name: {key: [] for key in MEASUREMENTS} for name in targets}
    for complete in targets.values():
        complete(fresh_prompt("Warm up"), 4)
    names = list(targets)
    for repeat in range(repeats):
        for index, (key, measure) in enumerate(MEASUREMENTS.items()):
            shift = (repeat + index) % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name][key].append(measure(targets[name]))
    return samples


def medians(samples: dict) -> dict:
    return {key: statistics.median(values) for key, values in samples.items()}


def compare(ours: dict, direct: dict) -> dict:
    """Medians of the per-repeat ratios (and differences): each pair ran back to back, so slow
    phases of a shared machine cancel out."""

    def ratio(key: str) -> float:
        return statistics.median(a / b for a, b in zip(ours[key], direct[key], strict=True))

    def extra_ms(key: str) -> float:
        return statistics.median(
            1000 * (a - b) for a, b in zip(ours[key], direct[key], strict=True)
        )

    return {
        "decode": ratio("decode_tok_s"),
        "ttft_short_extra_ms": extra_ms("ttft_short_s"),
        "ttft_long_extra_ms": extra_ms("ttft_long_s"),
        f"aggregate_{STREAMS}": ratio(AGGREGATE),
    }


def ratio_cells(ratios: dict) -> dict[str, str]:
    return {
        "decode_tok_s": f"{ratios['decode']:.3f}x",
        "ttft_short_s": f"{ratios['ttft_short_extra_ms']:+.1f} ms",
        "ttft_long_s": f"{ratios['ttft_long_extra_ms']:+.1f} ms",
        AGGREGATE: f"{ratios[f'aggregate_{STREAMS}']:.3f}x",
    }


def print_table(results: dict, ratios: dict) -> None:
    names = list(results)
    ours, engine_only = ratio_cells(ratios), ratio_cells(ratios["engine_only"])
    header = "".join(f"{name:>11}" for name in names)
    print(f"{'':28}{header}{'mlxserve/direct':>17}{'engine/direct':>15}")
    labels = {
        "decode_tok_s": "decode tok/s",
        "ttft_short_s": "ttft short prompt (s)",
        "ttft_long_s": "ttft ~300-token prompt (s)",
        AGGREGATE: f"aggregate tok/s, {STREAMS} streams",
    }
    for key, label in labels.items():
        digits = 3 if key.startswith("ttft") else 2
        values = "".join(f"{results[name][key]:11.{digits}f}" for name in names)
        print(f"{label:28}{values}{ours[key]:>17}{engine_only[key]:>15}")


def direct_server(record: ModelRecord) -> LlamaServerProcess:
    """A llama.cpp server with the options mlxserve's engine starts its child with."""
    return LlamaServerProcess(
        record.directory / record.gguf_file,
        context_length=automatic_context_length(record),
        parallel=PARALLEL,
    )


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 3
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "llamacpp")
    record = find_model(models_dir, model_id)
    direct = direct_server(record)
    with direct, ServerProcess(models_dir, model=model_id, engine="llamacpp") as ours:
        engine = EngineTarget(record)
        try:
            targets = {
                "direct": http_target(direct.base_url, model_id),
                "mlxserve": http_target(ours.base_url, model_id),
                "engine": engine.complete,
            }
            long_tokens = len(engine.call(engine.model.tokenize(fresh_prompt(LONG_BODY))))
            samples = measure_side_by_side(targets, repeats)
        finally:
            engine.close()
    ratios = {
        **compare(samples["mlxserve"], samples["direct"]),
        "engine_only": compare(samples["engine"], samples["direct"]),
    }
    results = {name: medians(by_key) for name, by_key in samples.items()}
    print_table(results, ratios)
    return {**results, "ratios": ratios, "repeats": repeats, "long_prompt_tokens": long_tokens}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--models-dir", type=Path, default=None)
    print(json.dumps(run(parser.parse_args()), indent=2))
