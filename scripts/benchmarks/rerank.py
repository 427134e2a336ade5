"""Rerank throughput: documents per second on the default Gemma model, one request holding every
document (batched, the query read once) against the same documents sent one per request, as a
client without batching would. The scores of both ways are checked to agree.

    python scripts/bench.py rerank [--iterations N] [--models-dir DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.models.defaults import ensure_default_model
from tests.server import ServerProcess

QUERY = "How do plants turn sunlight into energy?"
TOPICS = [
    "photosynthesis in the leaves of green plants",
    "the history of the printing press in Europe",
    "how volcanoes form along tectonic plate boundaries",
    "training schedules for marathon runners",
    "chlorophyll absorbing red and blue light",
    "the rules of chess and how pieces move",
    "baking sourdough bread with a natural starter",
    "the water cycle of evaporation and rain",
]
DOCUMENTS = [
    f"Passage {i}: a short text about {TOPICS[i % len(TOPICS)]}, written for a general reader "
    f"who wants the main facts in a few plain sentences."
    for i in range(32)
]
SCORE_TOLERANCE = 1e-3


def rerank(client: httpx.Client, model: str, documents: list[str]) -> dict[int, float]:
    body = {"model": model, "query": QUERY, "documents": documents}
    answer = client.post("/v1/rerank", json=body)
    answer.raise_for_status()
    return {r["index"]: r["relevance_score"] for r in answer.json()["results"]}


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def measure(client: httpx.Client, model: str, iterations: int) -> dict:
    rerank(client, model, DOCUMENTS[:2])  # warm-up: first graphs and buffers
    batched_s, one_s = float("inf"), float("inf")
    for _ in range(iterations):
        seconds, batched = timed(lambda: rerank(client, model, DOCUMENTS))
        batched_s = min(batched_s, seconds)
        seconds, singles = timed(lambda: [rerank(client, model, [d])[0] for d in DOCUMENTS])
        one_s = min(one_s, seconds)
    worst = max(abs(batched[i] - singles[i]) for i in range(len(DOCUMENTS)))
    if worst > SCORE_TOLERANCE:
        raise RuntimeError(f"batched and single scores differ by {worst}")
    return {
        "documents": len(DOCUMENTS),
        "batched_docs_per_s": len(DOCUMENTS) / batched_s,
        "one_at_a_time_docs_per_s": len(DOCUMENTS) / one_s,
        "ratio": one_s / batched_s,
        "largest_score_difference": worst,
    }


def run(args) -> dict:
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    iterations = getattr(args, "iterations", None) or 1
    with ServerProcess(models_dir, model=model_id, engine="mlx") as server:
        with httpx.Client(base_url=server.base_url, timeout=900) as client:
            result = measure(client, model_id, iterations)
    print(f"{'':16}{'docs/s':>10}")
    print(f"{'batched':16}{result['batched_docs_per_s']:10.2f}")
    print(f"{'one at a time':16}{result['one_at_a_time_docs_per_s']:10.2f}")
    worst = result["largest_score_difference"]
    print(f"ratio {result['ratio']:.2f}x, largest score difference {worst:.1e}")
    return result
