"""Prompt reuse: a second chat turn, and a cold restart with a long system prompt seen before.

A system prompt of about 4,000 tokens, then a short question (one token of reply, greedy):
- multi-turn: the same server answers a first question, then a second turn whose history holds
  the first (its prefix is in memory);
- cold restart: the server is stopped and started again, and a new question follows the same
  system prompt (mlxserve reads the prefix back from its disk cache; mlx-lm's server has none).
Time to first token measured by the client, for mlxserve's MLX engine and mlx-lm's server on the
same model and backend. Ratios are against reading the whole prompt.

    python scripts/bench.py cache [--models-dir DIR]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.engines import DISK_CACHE_FOLDER
from mlxserve.models.store import find_model
from scripts.benchmarks.mlx_engine import BANNED, MlxLmServer
from tests.server import ServerProcess

SYSTEM = " ".join(f"Rule {i}: keep answers short, polite and in plain words." for i in range(300))


def ttft(base_url: str, model: str, messages: list[dict]) -> float:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0,
        "stream": True,
        "logit_bias": BANNED,  # the one token is text, never an end of turn
    }
    started = time.perf_counter()
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=900) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                return time.perf_counter() - started
    raise RuntimeError(f"no token came back ({reply.status_code})")


def conversation(question: str, earlier: tuple[str, str] | None = None) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM}]
    if earlier:
        messages += [
            {"role": "user", "content": earlier[0]},
            {"role": "assistant", "content": earlier[1]},
        ]
    return [*messages, {"role": "user", "content": question}]


def turns(base_url: str, model: str) -> dict:
    first = ttft(base_url, model, conversation("What is rule 3?"))
    second = ttft(base_url, model, conversation("And rule 9?", ("What is rule 3?", "Be polite.")))
    return {"turn1_s": first, "turn2_s": second, "turn2_ratio": second / first}


def run(args) -> dict:
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    shutil.rmtree(Path(models_dir) / DISK_CACHE_FOLDER, ignore_errors=True)
    options = ("--context-length", "8192")
    with ServerProcess(models_dir, model=model_id, engine="mlx", extra_args=options) as server:
        ours = turns(server.base_url, model_id)
    with ServerProcess(models_dir, model=model_id, engine="mlx", extra_args=options) as server:
        restarted = ttft(server.base_url, model_id, conversation("What is rule 12?"))
    ours.update(restart_s=restarted, restart_ratio=restarted / ours["turn1_s"])
    path = find_model(models_dir, model_id).path
    for attempt in ("first", "after restart"):
        peer_server = MlxLmServer(path)
        try:
            peer_server.wait()
            if attempt == "first":
                peer = turns(peer_server.base_url, path)
            else:
                restarted = ttft(peer_server.base_url, path, conversation("What is rule 12?"))
                peer.update(restart_s=restarted, restart_ratio=restarted / peer["turn1_s"])
        finally:
            peer_server.stop()
    print(f"{'':16}{'turn 1 s':>10}{'turn 2 s':>10}{'ratio':>8}{'restart s':>11}{'ratio':>8}")
    for name, row in (("mlxserve", ours), ("mlx_lm.server", peer)):
        print(
            f"{name:16}{row['turn1_s']:10.2f}{row['turn2_s']:10.2f}{row['turn2_ratio']:8.2f}"
            f"{row['restart_s']:11.2f}{row['restart_ratio']:8.2f}"
        )
    return {"mlxserve": ours, "mlx_lm_server": peer}
