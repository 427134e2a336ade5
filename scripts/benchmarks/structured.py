"""Constrained decoding: its cost per token on both engines, grammar compile times, and the
llama.cpp engine's schema path against llama.cpp's own `json_schema`.

- decode: greedy tok/s of a reply held to a JSON schema (30 integers) against a free reply of
  the same length (EOS banned), through `mlxserve serve` on each engine, from /api/v0's stats.
- compile: llguidance compiling each schema of tests/schemas.py against the Gemma vocabulary
  (what the first request with a schema pays), and the same schema again (a cache hit).
- llama.cpp direct: the same schema sent to a llama.cpp server's /completion as `json_schema`
  (its own GBNF conversion) against the llama.cpp engine through mlxserve.

    python scripts/bench.py structured [--iterations N] [--models-dir DIR]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.engine.base import Grammar
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.memory import automatic_context_length
from mlxserve.models.store import find_model
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from tests.schemas import SCHEMAS
from tests.server import ServerProcess

NUMBERS = {
    "type": "array",
    "items": {"type": "integer", "minimum": 100, "maximum": 999},
    "minItems": 30,
    "maxItems": 30,
}
PROMPT = "List thirty three-digit numbers."
BANNED = {"1": -100, "106": -100}  # Gemma's EOS and end of turn: the free reply runs on


def native_chat(base_url: str, model: str, max_tokens: int, schema: dict | None) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "repeat_penalty": 1.0,
    }
    if schema is None:
        body["logit_bias"] = BANNED
    else:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": schema},
        }
    reply = httpx.post(f"{base_url}/api/v0/chat/completions", json=body, timeout=600).json()
    return {
        "tps": reply["stats"]["tokens_per_second"],
        "tokens": reply["usage"]["completion_tokens"],
    }


def decode_ratio(base_url: str, model: str, repeats: int) -> dict:
    constrained, free = [], []
    for _ in range(repeats):
        held = native_chat(base_url, model, 400, NUMBERS)
        constrained.append(held["tps"])
        free.append(native_chat(base_url, model, held["tokens"], None)["tps"])
    ratio = statistics.median(c / f for c, f in zip(constrained, free, strict=True))
    return {
        "constrained_tps": statistics.median(constrained),
        "free_tps": statistics.median(free),
        "ratio": ratio,
    }


def compile_times(model_dir: Path) -> dict:
    from llguidance import LLMatcher
    from transformers import PreTrainedTokenizerFast

    from mlxserve.engine.mlx.serving.constrained_sampling import GrammarCompiler

    hf = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    compiler = GrammarCompiler(hf, 262144, [1, 106])
    tokenizer = compiler.tokenizer
    first, again = [], []
    for schema in SCHEMAS.values():
        grammar: Grammar = compile_constraints(Constraints(json_schema=schema), None)
        start = time.perf_counter()
        LLMatcher(tokenizer, grammar.lark, log_level=0)
        first.append(time.perf_counter() - start)
        compiler.matcher(grammar.lark)
        start = time.perf_counter()
        compiler.matcher(grammar.lark)
        again.append(time.perf_counter() - start)
    return {
        "compile_median_ms": 1000 * statistics.median(first),
        "compile_worst_ms": 1000 * max(first),
        "cached_median_ms": 1000 * statistics.median(again),
        "schemas": len(first),
    }


def direct_json_schema(base_url: str, repeats: int) -> float:
    """llama.cpp's own schema path, same prompt text as the chat template renders."""
    prompt = f"<start_of_turn>user\n{PROMPT}<end_of_turn>\n<start_of_turn>model\n"
    rates = []
    for _ in range(repeats):
        body = {
            "prompt": prompt,
            "n_predict": 400,
            "temperature": 0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "json_schema": NUMBERS,
        }
        timings = httpx.post(f"{base_url}/completion", json=body, timeout=600).json()["timings"]
        rates.append(timings["predicted_per_second"])
    return statistics.median(rates)


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 3
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    results = {}
    for engine in ("mlx", "llamacpp"):
        model_id = ensure_default_model(models_dir, engine)
        with ServerProcess(models_dir, model=model_id, engine=engine) as server:
            results[engine] = found = decode_ratio(server.base_url, model_id, repeats)
        print(
            f"{engine}: constrained {found['constrained_tps']:.2f} tok/s, "
            f"free {found['free_tps']:.2f} tok/s, ratio {found['ratio']:.3f}"
        )
    record = find_model(models_dir, ensure_default_model(models_dir, "llamacpp"))
    context = automatic_context_length(record)
    with LlamaServerProcess(gguf_file_of(record), context_length=context, parallel=4) as direct:
        direct_tps = direct_json_schema(direct.base_url, repeats)
    ours = results["llamacpp"]["constrained_tps"]
    results["llamacpp_vs_direct"] = {"direct_tps": direct_tps, "ratio": ours / direct_tps}
    print(
        f"llama.cpp with a schema: mlxserve {ours:.2f} tok/s, llama.cpp's json_schema "
        f"{direct_tps:.2f} tok/s, ratio {ours / direct_tps:.3f}"
    )
    mlx_dir = find_model(models_dir, ensure_default_model(models_dir, "mlx")).directory
    results["compile"] = c = compile_times(mlx_dir)
    print(
        f"grammar compile over {c['schemas']} schemas: median {c['compile_median_ms']:.1f} ms, "
        f"worst {c['compile_worst_ms']:.1f} ms; a repeated schema {c['cached_median_ms']:.3f} ms"
    )
    return results
