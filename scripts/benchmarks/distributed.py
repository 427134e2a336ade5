"""Distributed serving: the default model (Gemma 3 270M, MLX on the CPU) in one process, and
split by layer ranges over two ranks on this machine (`mlx.launch -n 2 --backend ring`), through
the same HTTP API: decode tok/s of one stream and aggregate tok/s of 4, and each rank's memory
(resident set now and at its peak, and the weights and MLX active memory it logs once loaded).

On one machine the two ranks share its cores and talk over loopback: this measures what the
split costs and that each rank holds half the weights, not what a second machine adds.

    python scripts/bench.py distributed [--iterations TOKENS] [--models-dir DIR]
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from scripts.benchmarks.mlx_engine import concurrent_throughput, stream_completion
from tests.distributed_server import LaunchedServer
from tests.server import ServerProcess

GIB = 1024**3
STREAMS = 4
LOADED = re.compile(
    r"rank (\d+) holds its part of .*: ([\d.]+) GiB of weights, MLX active memory ([\d.]+) GiB"
)


def memory_of(pid: int) -> dict[str, float]:
    """Resident set now and at its peak, in GiB, from the kernel's account of the process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return {"rss_gib": int(kib["VmRSS"]) / 1024**2, "peak_rss_gib": int(kib["VmHWM"]) / 1024**2}


def speed(base_url: str, model: str, tokens: int) -> dict[str, float]:
    stream_completion(base_url, model, "Warm up:", 4)
    single = max(
        stream_completion(base_url, model, "Once upon a time", tokens)["decode_tok_s"]
        for _ in range(2)
    )
    aggregate = concurrent_throughput(base_url, model, STREAMS, tokens)
    return {"decode_tok_s": single, f"aggregate_tok_s_{STREAMS}_streams": aggregate}


def run(args) -> dict:
    tokens = getattr(args, "iterations", None) or 32
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    weights = Path(find_model(models_dir, model_id).path) / "model.safetensors"
    results = {}
    with ServerProcess(models_dir, model=model_id, engine="mlx") as single:
        row = speed(single.base_url, model_id, tokens)
        rank = {"weights_gib": weights.stat().st_size / GIB, **memory_of(single.process.pid)}
        results["1 rank"] = {**row, "ranks": [rank]}
    with LaunchedServer(models_dir, model_id, "pipeline") as launched:
        row = speed(launched.base_url, model_id, tokens)
        logged = {int(r): (float(w), float(a)) for r, w, a in LOADED.findall(launched.log_text())}
        ranks = [
            {
                "weights_gib": logged[rank][0],
                "mlx_active_gib": logged[rank][1],
                **memory_of(launched.rank_pid(rank)),
            }
            for rank in range(2)
        ]
        results["2 ranks"] = {**row, "ranks": ranks}
    report(results)
    return results


def report(results: dict) -> None:
    print(f"{'':10}{'decode tok/s':>14}{f'{STREAMS} streams tok/s':>18}   per rank (GiB)")
    for name, row in results.items():
        ranks = "; ".join(
            f"rank {i}: weights {r['weights_gib']:.2f}, RSS {r['rss_gib']:.2f} "
            f"(peak {r['peak_rss_gib']:.2f})"
            + (f", MLX active {r['mlx_active_gib']:.2f}" if "mlx_active_gib" in r else "")
            for i, r in enumerate(row["ranks"])
        )
        aggregate = row[f"aggregate_tok_s_{STREAMS}_streams"]
        print(f"{name:10}{row['decode_tok_s']:14.1f}{aggregate:18.1f}   {ranks}")
