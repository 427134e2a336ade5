"""Benchmarks: each measures mlxserve side by side with a peer in the same run and reports ratios.

    python scripts/bench.py all | sampler | mlx | llamacpp | embeddings | client
                             | structured | vision | stall | speculative | cache
                             | concurrency | agents | distributed | families | profile
                             | ollama | audio | rerank | logprobs | memory | lora | shapes
                             [--iterations N]
                             [--models-dir DIR]
                             [--shape gemma3-270m | llama3-8b-4bit]  (shapes)

Not a test: numbers depend on the machine. Results print as tables and are saved as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlxserve  # noqa: E402,F401 - OpenBLAS before mlx.core

BENCHMARKS = {
    "sampler": "scripts.benchmarks.sampler",
    "mlx": "scripts.benchmarks.mlx_engine",
    "llamacpp": "scripts.benchmarks.llamacpp",
    "embeddings": "scripts.benchmarks.embeddings",
    "client": "scripts.benchmarks.llamacpp_client",
    "structured": "scripts.benchmarks.structured",
    "vision": "scripts.benchmarks.vision",
    "stall": "scripts.benchmarks.stall",
    "speculative": "scripts.benchmarks.speculative",
    "cache": "scripts.benchmarks.cache",
    "concurrency": "scripts.benchmarks.concurrency",
    "agents": "scripts.benchmarks.agents",
    "distributed": "scripts.benchmarks.distributed",
    "families": "scripts.benchmarks.families",
    "profile": "scripts.benchmarks.profile",
    "ollama": "scripts.benchmarks.ollama",
    "audio": "scripts.benchmarks.audio",
    "rerank": "scripts.benchmarks.rerank",
    "logprobs": "scripts.benchmarks.logprobs",
    "memory": "scripts.benchmarks.memory",
    "lora": "scripts.benchmarks.lora",
    "shapes": "scripts.benchmarks.shapes",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=["all", *BENCHMARKS])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="store holding the default model (default: a fresh temporary store)",
    )
    parser.add_argument("--shape", default=None, help="shapes: the model's shape")
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results.json")
    args = parser.parse_args()
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    results = {"time": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in names:
        print(f"\n== {name}", flush=True)
        results[name] = importlib.import_module(BENCHMARKS[name]).run(args)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nsaved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
