"""Time to first token on the requests real agent CLIs send (recorded by scripts/agents.sh
under tests/data/agents/): each conversation's first turn (a cold prompt of thousands of
tokens: system prompt, tool schemas) and its second turn (the same prefix, read from the prompt
cache), through mlxserve's own endpoints, beside a peer reading the same prompt tokens:
llama.cpp's server called directly (for the llama.cpp engine) and mlx_lm.server (for MLX).

    python scripts/bench.py agents [--models-dir DIR]

The prompts the peers read are the ones mlxserve rendered, taken from its request log.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx

from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.engines import DISK_CACHE_FOLDER, gguf_file_of
from mlxserve.models.memory import automatic_context_length
from mlxserve.models.store import find_model
from scripts.benchmarks.mlx_engine import MlxLmServer
from tests.server import ServerProcess

RECORDED = Path(__file__).resolve().parents[2] / "tests" / "data" / "agents"
CONVERSATIONS = {
    "claude_code": ("claude_code_turn1.json", "claude_code_turn2.json"),
    "codex": ("codex_turn1.json", "codex_turn2.json"),
}
FIRST_OUTPUT = {  # the stream event that carries a reply's first token, by endpoint
    "/v1/messages": ("content_block_start", "message_delta"),
    "/v1/responses": ("response.output_item.added", "response.completed"),
}


def recorded(name: str) -> tuple[str, dict]:
    entry = json.loads((RECORDED / name).read_text())
    return entry["path"], entry["body"]


def mlxserve_ttft(base_url: str, path: str, body: dict) -> float:
    """Streams the recorded request with a one-token reply; seconds to its first output."""
    limit = "max_tokens" if path == "/v1/messages" else "max_output_tokens"
    body = {**body, "stream": True, limit: 1}
    started = time.perf_counter()
    with httpx.stream("POST", f"{base_url}{path}", json=body, timeout=1800) as reply:
        for line in reply.iter_lines():
            if line.startswith("event: ") and line[7:] in FIRST_OUTPUT[path]:
                return time.perf_counter() - started
    raise RuntimeError(f"{path}: no output ({reply.status_code})")


class PromptLog:
    """The formatted prompts a server's request log shows, in order."""

    def __init__(self, base_url: str):
        self.prompts: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(base_url,), daemon=True)
        self._thread.start()
        time.sleep(0.5)  # subscribed before the first request

    def _read(self, base_url: str) -> None:
        with httpx.stream("GET", f"{base_url}/api/v0/log/stream", timeout=None) as feed:
            for line in feed.iter_lines():
                if line.startswith("data: "):
                    record = json.loads(line[6:])
                    if record.get("type") == "request":
                        self.prompts.append(record["prompt"])

    def wait_for(self, count: int) -> list[str]:
        deadline = time.monotonic() + 30
        while len(self.prompts) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.prompts[:count]


def ours(models_dir: Path, engine: str) -> tuple[dict, dict[str, list[str]]]:
    """mlxserve's TTFT for every turn, and the prompts it rendered for them."""
    model = ensure_default_model(models_dir, engine)
    shutil.rmtree(models_dir / DISK_CACHE_FOLDER, ignore_errors=True)  # cold means cold
    results, prompts = {}, {}
    with ServerProcess(models_dir, model=model, engine=engine) as server:
        log = PromptLog(server.base_url)
        for name, turns in CONVERSATIONS.items():
            results[name] = [mlxserve_ttft(server.base_url, *recorded(turn)) for turn in turns]
            prompts[name] = log.wait_for(len(log.prompts))[-len(turns) :]
    return results, prompts


def llamacpp_ttft(base_url: str, prompt: str) -> float:
    """The same tokens mlxserve's llama.cpp engine sends: the rendered text, specials parsed,
    no BOS added (the template wrote it)."""
    tokenized = {"content": prompt, "add_special": False, "parse_special": True}
    tokens = httpx.post(f"{base_url}/tokenize", json=tokenized, timeout=600).json()["tokens"]
    body = {"prompt": tokens, "n_predict": 1, "stream": True, "cache_prompt": True}
    return _first_data(f"{base_url}/completion", body)


def mlx_lm_ttft(base_url: str, model: str, prompt: str) -> float:
    """mlx_lm.server adds BOS itself: the rendered text without the template's."""
    text = prompt.removeprefix("<bos>")
    body = {"model": model, "prompt": text, "max_tokens": 1, "stream": True}
    return _first_data(f"{base_url}/v1/completions", body)


def _first_data(url: str, body: dict) -> float:
    started = time.perf_counter()
    with httpx.stream("POST", url, json=body, timeout=1800) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                return time.perf_counter() - started
    raise RuntimeError(f"{url}: no output ({reply.status_code})")


def peer(models_dir: Path, engine: str, prompts: dict[str, list[str]]) -> dict:
    record = find_model(models_dir, ensure_default_model(models_dir, engine))
    if engine == "llamacpp":
        context = automatic_context_length(record)
        with LlamaServerProcess(gguf_file_of(record), context_length=context, parallel=4) as direct:
            return {name: [llamacpp_ttft(direct.base_url, p) for p in turns]
                    for name, turns in prompts.items()}  # fmt: skip
    server = MlxLmServer(record.path)
    try:
        server.wait()
        return {name: [mlx_lm_ttft(server.base_url, server.model, p) for p in turns]
                for name, turns in prompts.items()}  # fmt: skip
    finally:
        server.stop()


def run(args) -> dict:
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    peers = {"llamacpp": "llama.cpp server", "mlx": "mlx_lm.server"}
    report = {}
    for engine in ("llamacpp", "mlx"):
        mine, prompts = ours(Path(models_dir), engine)
        theirs = peer(Path(models_dir), engine, prompts)
        for name in CONVERSATIONS:
            (cold, warm), (peer_cold, peer_warm) = mine[name], theirs[name]
            row = {
                "cold_s": cold, "second_turn_s": warm, "second_turn_ratio": warm / cold,
                "peer": peers[engine], "peer_cold_s": peer_cold, "peer_second_turn_s": peer_warm,
                "cold_vs_peer": cold / peer_cold, "second_turn_vs_peer": warm / peer_warm,
            }  # fmt: skip
            report[f"{engine}/{name}"] = row
            print(
                f"{engine:9} {name:12} cold {cold:7.2f} s (peer {peer_cold:7.2f} s, "
                f"{cold / peer_cold:.2f}x)  second turn {warm:6.2f} s = {warm / cold:.3f}x of "
                f"cold (peer {peer_warm:6.2f} s, {warm / peer_warm:.2f}x)",
                flush=True,
            )
    return report
