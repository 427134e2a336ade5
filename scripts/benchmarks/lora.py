"""LoRA adapters in one batch: aggregate tok/s of 4 streams, each on a different adapter of the
default model, against 4 streams on the base model alone, on the same server, in alternated
rounds.

The adapters have mlx-lm's default shape (rank 8, scale 20, every linear layer of the last 16
layers) with random weights: speed does not depend on what they learned.
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from mlxserve.engine.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mlxserve.models.adapters import import_adapter
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from scripts.benchmarks.mlx_engine import stream_completion
from tests.server import ServerProcess

STREAMS = 4
ROUNDS = 3
RANK, SCALE, LAYERS = 8, 20.0, 16  # mlx_lm.lora's defaults


def write_adapter(model, directory: Path, seed: int) -> Path:
    """Random LoRA matrices for every linear layer of the model's last LAYERS layers."""
    mx.random.seed(seed)
    weights = {}
    layers = model.layers[-LAYERS:]
    first = len(model.layers) - len(layers)
    for index, layer in enumerate(layers, start=first):
        for path, module in layer.named_modules():
            if not isinstance(module, (nn.Linear, nn.QuantizedLinear)):
                continue
            out_dims, in_dims = module.weight.shape
            if isinstance(module, nn.QuantizedLinear):
                in_dims = in_dims * 32 // module.bits
            prefix = f"model.layers.{index}.{path}"
            weights[f"{prefix}.lora_a"] = mx.random.normal((in_dims, RANK)) * 0.01
            weights[f"{prefix}.lora_b"] = mx.random.normal((RANK, out_dims)) * 0.01
    directory.mkdir(parents=True)
    mx.save_safetensors(str(directory / ADAPTER_WEIGHTS), weights)
    parameters = {"rank": RANK, "scale": SCALE, "dropout": 0.0}
    config = {"fine_tune_type": "lora", "num_layers": LAYERS, "lora_parameters": parameters}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config))
    return directory


def aggregate(base_url: str, models: list[str], tokens: int) -> float:
    """Tokens a second over every stream, one stream per entry of `models`, all at once."""
    prompts = [(model, f"Story number {i}: once upon a time") for i, model in enumerate(models)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        list(pool.map(lambda job: stream_completion(base_url, *job, tokens), prompts))
    return len(models) * tokens / (time.perf_counter() - start)


def run(args) -> dict:
    from mlx_lm import load

    tokens = getattr(args, "iterations", None) or 32
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    record = find_model(models_dir, model_id)
    model = load(record.path)[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    names = [f"bench{i}" for i in range(STREAMS)]
    for seed, name in enumerate(names):
        import_adapter(write_adapter(model, scratch / name, seed), record, name, overwrite=True)
    del model
    adapters = [f"{model_id}@{name}" for name in names]
    with ServerProcess(models_dir, model=model_id, engine="mlx") as server:
        aggregate(server.base_url, adapters, 4)  # loads the adapters, warms both paths
        rounds = [
            (
                aggregate(server.base_url, [model_id] * STREAMS, tokens),
                aggregate(server.base_url, adapters, tokens),
            )
            for _ in range(ROUNDS)
        ]
    # Alternated rounds, the median of their ratios: a busy machine's drift cancels out.
    ratio = statistics.median(mixed / base for base, mixed in rounds)
    base, mixed = (statistics.median(column) for column in zip(*rounds, strict=True))
    print(f"{'':36}{'tok/s':>10}")
    print(f"{f'{STREAMS} streams on the base':36}{base:10.2f}")
    print(f"{f'{STREAMS} streams on {STREAMS} adapters':36}{mixed:10.2f}")
    print(f"{'ratio (target >= 0.8)':36}{ratio:10.2f}")
    return {"base_tok_s": base, "adapters_tok_s": mixed, "ratio": ratio, "tokens": tokens}
