"""Tool-call grammars of every model family: their cost per token and their compile time.

- decode: the real Gemma 3 270M loaded with each family's `tool_format` makes a forced call in
  that family's syntax (the grammar holds every token; temperature 1.0, one call); its tok/s
  against a free reply of the same length on the same model (no tools, EOS banned), from
  /api/v0's stats, on both engines. The free reply's prompt is padded to the forced one's
  length, as the tools' text makes that longer: each token of context slows the decode a
  little (on llama.cpp 234 tokens in place of 14 cost about 5%), which is no grammar's cost.
  The call's fixed opening is read with the prompt (jump-forward, docs/tool-calls.md), and the
  rate counts only the tokens sampled after it.
- compile: llguidance compiling each family's grammar for Claude Code's recorded tool list
  against the Gemma vocabulary (what the first forced call with those tools pays; a lazy
  grammar pays it at its trigger), and the same grammar again (a copy from the cache).

    python scripts/bench.py families [--iterations N] [--models-dir DIR]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.families.syntax import SYNTAXES
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from mlxserve.pipeline.constraints import compile_constraints
from mlxserve.pipeline.request import Constraints
from tests.server import ServerProcess
from tests.test_agent_tool_schemas import recorded_tools

SCHEMA = {  # a call of about 80 tokens, so its rate is measured over more than its first few
    "type": "object",
    "properties": {
        "cities": {
            "type": "array",
            "items": {"type": "string", "maxLength": 16},
            "minItems": 8,
            "maxItems": 8,
        },
        "days": {"type": "integer", "minimum": 1, "maximum": 9},
        "detail": {"enum": ["brief", "full"]},
    },
    "required": ["cities", "days", "detail"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "get_forecast", "parameters": SCHEMA}}]
ASK = [{"role": "user", "content": "Forecast for eight cities?"}]
BANNED = {"1": -100, "106": -100}  # Gemma's EOS and end of turn: the free reply runs on
# DeepSeek's markers hold "▁", which Gemma's SentencePiece vocabulary cannot spell as text.
FAMILIES = sorted(set(SYNTAXES) - {"deepseek"})


def native_chat(base_url: str, model: str, body: dict) -> dict:
    body = {"model": model, "messages": ASK, "repeat_penalty": 1.0, **body}
    reply = httpx.post(f"{base_url}/api/v0/chat/completions", json=body, timeout=600).json()
    if "stats" not in reply:
        raise RuntimeError(f"{model}: {reply}")
    return {
        "tps": reply["stats"]["tokens_per_second"],
        "tokens": reply["usage"]["completion_tokens"],
        "prompt_tokens": reply["usage"]["prompt_tokens"],
    }


def padded_ask(base_url: str, model: str, prompt_tokens: int) -> list[dict]:
    """ASK after a system note of filler words that brings its prompt to `prompt_tokens`."""
    words = 0
    for _ in range(4):
        messages = [{"role": "system", "content": "note " * words}, *ASK] if words else ASK
        short = native_chat(base_url, model, {"messages": messages, "max_tokens": 1})
        if short["prompt_tokens"] == prompt_tokens:
            break
        words = max(words + prompt_tokens - short["prompt_tokens"], 0)
    return messages


def decode_ratios(base_url: str, model: str, repeats: int) -> dict:
    results = {}
    for family in FAMILIES:
        load = {"model": model, "identifier": family, "tool_format": family, "context_length": 2048}
        httpx.post(f"{base_url}/api/v0/models/load", json=load, timeout=300).raise_for_status()
        ratios, held_rates, padding = [], [], None
        for seed in range(repeats):
            forced = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
                      "temperature": 1.0, "seed": seed, "max_tokens": 400}  # fmt: skip
            held = native_chat(base_url, family, forced)
            padding = padding or padded_ask(base_url, family, held["prompt_tokens"])
            free = {"messages": padding, "temperature": 1.0, "seed": seed,
                    "max_tokens": held["tokens"], "logit_bias": BANNED}  # fmt: skip
            ratios.append(held["tps"] / native_chat(base_url, family, free)["tps"])
            held_rates.append(held["tps"])
        httpx.post(f"{base_url}/api/v0/models/unload", json={"identifier": family}, timeout=60)
        results[family] = {"constrained_tps": statistics.median(held_rates),
                           "ratio": statistics.median(ratios)}  # fmt: skip
        print(f"  {family:15} {results[family]['constrained_tps']:7.2f} tok/s, "
              f"ratio {results[family]['ratio']:.3f}", flush=True)  # fmt: skip
    return results


def compile_times(model_dir: Path) -> dict:
    from llguidance import LLMatcher
    from transformers import PreTrainedTokenizerFast

    from mlxserve.engine.mlx.serving.constrained_sampling import GrammarCompiler

    hf = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    compiler = GrammarCompiler(hf, 262144, [1, 106])
    tokenizer, tools = compiler.tokenizer, recorded_tools("claude_code_turn1.json")
    results = {}
    for family in sorted(SYNTAXES):
        start = time.perf_counter()
        grammar = compile_constraints(Constraints(tools, tool_choice="required"), SYNTAXES[family])
        LLMatcher(tokenizer, grammar.lark, log_level=0)
        first = time.perf_counter() - start
        compiler.matcher(grammar.lark)
        start = time.perf_counter()
        compiler.matcher(grammar.lark)
        results[family] = {"first_ms": 1000 * first,
                           "cached_ms": 1000 * (time.perf_counter() - start)}  # fmt: skip
    return results


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 2
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    results = {}
    mlx_dir = find_model(models_dir, ensure_default_model(models_dir, "mlx")).directory
    results["compile"] = compiled = compile_times(mlx_dir)
    print(f"compile, {len(recorded_tools('claude_code_turn1.json'))} Claude Code tools:")
    for family, times in compiled.items():
        print(
            f"  {family:15} first {times['first_ms']:7.1f} ms, cached {times['cached_ms']:.3f} ms"
        )
    for engine in getattr(args, "engines", None) or ("llamacpp", "mlx"):
        model_id = ensure_default_model(models_dir, engine)
        print(f"{engine}: forced call against a free reply of its length", flush=True)
        with ServerProcess(models_dir, model=model_id, engine=engine) as server:
            results[engine] = decode_ratios(server.base_url, model_id, repeats)
    return results
