"""Ollama's /api/chat against /v1/chat/completions: the same streamed chats on one server.

Both endpoints get the same greedy chat (same messages, no repeat penalty, the same token limit:
Ollama's API has no logit bias, so EOS is not banned and each side's own token count is used),
at 1 and 4 concurrent streams, in alternating order each round so a slow phase of the machine
hits both. Aggregate tok/s = generated tokens / wall time from the first request to the last
reply; the ratio is /api/chat over /v1/chat/completions (target: at least 0.97). On a busy
machine wall time is noisy, so the mlxserve process's own CPU per token (its llama.cpp child
not counted) is reported too: what formatting each API's stream costs the server.

    python scripts/bench.py ollama [--iterations ROUNDS] [--models-dir DIR]
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import time
from collections.abc import Callable

import httpx
import psutil

from scripts.benchmarks import default_model_servers
from tests.server import ServerProcess

TOKENS = 128
STREAMS = (1, 4)
PROMPT = "Count from 1 to 1000, one number per line, with no other text."

Chat = Callable[[httpx.Client, str, int], int]  # (client, user text, tokens) -> tokens made


def messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def ollama_chat(base_url: str, model: str) -> Chat:
    def chat(client: httpx.Client, text: str, tokens: int) -> int:
        options = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": tokens}
        body = {"model": model, "messages": messages(text), "options": options, "stream": True}
        with client.stream("POST", f"{base_url}/api/chat", json=body) as reply:
            reply.raise_for_status()
            lines = [json.loads(line) for line in reply.iter_lines() if line]
        return lines[-1]["eval_count"]

    return chat


def openai_chat(base_url: str, model: str) -> Chat:
    def chat(client: httpx.Client, text: str, tokens: int) -> int:
        body = {"model": model, "messages": messages(text), "max_tokens": tokens,
                "temperature": 0, "repeat_penalty": 1.0, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        usage = None
        with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    usage = json.loads(line[6:]).get("usage") or usage
        return usage["completion_tokens"]

    return chat


def server_cpu_s(server: psutil.Process) -> float:
    times = server.cpu_times()
    return times.user + times.system


def aggregate(chat: Chat, server: psutil.Process, streams: int, tokens: int) -> dict:
    """Tok/s over all streams, the server's CPU ms per token and the tokens made (the same
    prompts on both endpoints, so greedy decoding gives both the same lengths)."""
    prompts = [f"{PROMPT} (list {i})" for i in range(streams)]
    # A fresh connection per request, as a client that opens one per chat would.
    with httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        start, cpu = time.perf_counter(), server_cpu_s(server)
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            made = sum(pool.map(lambda text: chat(client, text, tokens), prompts))
        elapsed, cpu = time.perf_counter() - start, server_cpu_s(server) - cpu
    return {"tok_s": made / elapsed, "cpu_ms_per_token": 1000 * cpu / made, "tokens": made}


def measure(server: ServerProcess, model: str, rounds: int) -> dict:
    chats = {
        "api_chat": ollama_chat(server.base_url, model),
        "v1_chat": openai_chat(server.base_url, model),
    }
    process = psutil.Process(server.process.pid)
    for chat in chats.values():
        aggregate(chat, process, max(STREAMS), 8)  # warm both paths and the prompt cache
    samples = {(name, n): [] for name in chats for n in STREAMS}
    for round_number in range(rounds):
        order = list(chats) if round_number % 2 == 0 else list(reversed(chats))
        for n in STREAMS:
            for name in order:
                samples[name, n].append(aggregate(chats[name], process, n, TOKENS))
    rows = {}
    for n in STREAMS:
        rows[n] = row = {
            f"{name}_{key}": statistics.median(s[key] for s in samples[name, n])
            for name in chats
            for key in ("tok_s", "cpu_ms_per_token", "tokens")
        }
        row["ratio"] = row["api_chat_tok_s"] / row["v1_chat_tok_s"]
    return rows


def run(args) -> dict:
    rounds = getattr(args, "iterations", None) or 5
    results = {}
    for engine, server, model_id in default_model_servers(args):
        results[engine] = rows = measure(server, model_id, rounds)
        print(f"{engine}, {TOKENS} tokens a chat, median of {rounds} rounds:")
        print(f"  {'':10}{'/api/chat':>22}{'/v1/chat/completions':>24}{'ratio':>8}")
        for n in STREAMS:
            row = rows[n]
            cells = [
                f"{row[f'{name}_tok_s']:7.1f} tok/s {row[f'{name}_cpu_ms_per_token']:5.2f} ms CPU"
                for name in ("api_chat", "v1_chat")
            ]
            print(f"  {f'{n} streams':10}{cells[0]:>22}{cells[1]:>24}{row['ratio']:8.3f}")
    return results
