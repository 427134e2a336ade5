"""Log-probabilities' cost: the same greedy completion with `logprobs` (5 alternatives a token)
and without, on one server, decode tok/s from /api/v0's stats (the first token's wait left out),
in alternating order each round. The ratio is with over without (target: at least 0.9).

    python scripts/bench.py logprobs [--iterations ROUNDS] [--models-dir DIR]
"""

from __future__ import annotations

import statistics

import httpx

from scripts.benchmarks import default_model_servers

TOKENS = 96
PROMPT = "Count from 1 to 1000, one number per line:\n1\n2\n"
NO_EOS = {"1": -100, "106": -100}  # Gemma's end tokens: every reply is TOKENS long


def decode_rate(base_url: str, model: str, logprobs: int | None) -> float:
    body = {"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0,
            "repeat_penalty": 1.0, "logit_bias": NO_EOS}  # fmt: skip
    if logprobs is not None:
        body["logprobs"] = logprobs
    reply = httpx.post(f"{base_url}/api/v0/completions", json=body, timeout=600).json()
    assert reply["usage"]["completion_tokens"] == TOKENS, reply["usage"]
    return reply["stats"]["tokens_per_second"]


def measure(base_url: str, model: str, rounds: int) -> dict:
    decode_rate(base_url, model, 5)  # warm the prompt cache and both paths
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for round_number in range(rounds):
        order = ["with", "without"] if round_number % 2 == 0 else ["without", "with"]
        for name in order:
            rates[name].append(decode_rate(base_url, model, 5 if name == "with" else None))
    row = {f"{name}_tok_s": statistics.median(values) for name, values in rates.items()}
    row["ratio"] = row["with_tok_s"] / row["without_tok_s"]
    return row


def run(args) -> dict:
    rounds = getattr(args, "iterations", None) or 5
    results = {}
    for engine, server, model_id in default_model_servers(args):
        results[engine] = row = measure(server.base_url, model_id, rounds)
        print(f"{engine}, {TOKENS} tokens, median of {rounds} rounds: with logprobs "
              f"{row['with_tok_s']:.1f} tok/s, without {row['without_tok_s']:.1f}, "
              f"ratio {row['ratio']:.3f}", flush=True)  # fmt: skip
    return results
