"""Where an MLX decode step's time goes, at 1, 8 and 32 streams, and how near the step comes to
what memory bandwidth allows: the engine runs in this process on the default model, each stream
a greedy request of the same length (EOS banned), and the runner times each part of every step
(engine/mlx/serving/step_profile.py).

The bandwidth bound: a step reads every weight once and each stream's keys and values, so at
best it takes (weight bytes + KV bytes) / bandwidth, with the bandwidth measured here as the
fastest a 1 GiB matrix streams through a matrix-vector product (the shape of a decode step).

Each stream count runs twice: with the tokens chosen on the device and the next step built ahead
(`--sample-on device`, engine/mlx/serving/device_sampling.py), and with every row sampled by the
C sampler on the host (`--sample-on host`), the same greedy tokens either way."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import mlx.core as mx

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.engine.mlx.serving.step_profile import PHASES, StepProfile
from mlxserve.models import memory
from mlxserve.models.defaults import ensure_default_model
from mlxserve.models.store import find_model
from mlxserve.sampling.params import SamplingParams

STREAMS = (1, 8, 32)
PROMPT = "Story number {}: once upon a time"
BANNED = {1: -100.0, 106: -100.0}  # Gemma's EOS and end-of-turn, so lengths are exact


def measured_bandwidth(shapes=((16384, 16384), (4096, 65536))) -> float:
    """Bytes per second at which the device streams a matrix through a matrix-vector product:
    the best of five runs over each shape."""
    best = 0.0
    for shape in shapes:
        matrix, vector = mx.ones(shape), mx.ones((shape[1],))
        mx.eval(matrix, vector)
        for _ in range(5):
            started = time.perf_counter()
            mx.eval(matrix @ vector)
            best = max(best, matrix.nbytes / (time.perf_counter() - started))
    return best


async def profile_streams(
    path: Path, streams: int, tokens: int, on_device: bool
) -> tuple[dict, float]:
    """The profile of `streams` concurrent requests, and their aggregate tok/s."""
    profile = StepProfile()
    sample_on = "device" if on_device else "host"
    model = await MLXModel.load(
        path, 2048, max_batch_size=streams, profile=profile, sample_on=sample_on
    )
    greedy = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias=BANNED)

    async def one(n: int, max_tokens: int) -> None:
        request = EngineRequest(prompt=PROMPT.format(n), sampling=greedy, max_tokens=max_tokens)
        async for _ in model.generate(request):
            pass

    try:
        await one(0, 4)  # warm-up: the first step compiles and allocates
        profile.reset()
        started = time.perf_counter()
        await asyncio.gather(*(one(n, tokens) for n in range(streams)))
        return profile.summary(), streams * tokens / (time.perf_counter() - started)
    finally:
        await model.close()


def bound_tok_s(record, streams: int, context: int, bandwidth: float) -> float:
    weights = sum(f.stat().st_size for f in Path(record.path).glob("*.safetensors"))
    kv = memory.estimate_memory(record, 1).kv_cache_bytes * context * streams
    return streams * bandwidth / (weights + kv)


def run(args) -> dict:
    tokens = getattr(args, "iterations", None) or 48
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    record = find_model(models_dir, ensure_default_model(models_dir, "mlx"))
    bandwidth = measured_bandwidth()
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s on {mx.default_device()}")
    print(f"{'streams':>10}{'step ms':>9}" + "".join(f"{p:>9}" for p in PHASES) + f"{'sum':>8}")
    results = {"bandwidth_bytes_per_s": bandwidth, "streams": {}, "host_streams": {}}
    for streams in STREAMS:
        for on_device, key in ((False, "host_streams"), (True, "streams")):
            summary, tok_s = asyncio.run(
                profile_streams(Path(record.path), streams, tokens, on_device)
            )
            phases = summary["phases_ms"]
            context = 16 + tokens  # the prompt's tokens and the reply's
            bound = bound_tok_s(record, streams, context, bandwidth)
            summary.update(tok_s=tok_s, bound_tok_s=bound, fraction_of_bound=tok_s / bound)
            results[key][streams] = summary
            label = f"{streams} {'device' if on_device else 'host'}"
            print(
                f"{label:>10}{summary['step_ms']:9.2f}"
                + "".join(f"{phases[p]:9.2f}" for p in PHASES)
                + f"{summary['phases_sum_ms']:8.2f}"
            )
    for streams, summary in results["streams"].items():
        tok_s, bound = summary["tok_s"], summary["bound_tok_s"]
        host = results["host_streams"][streams]["tok_s"]
        print(
            f"{streams:>3} streams: {tok_s:.1f} tok/s of a bound of {bound:.1f} "
            f"({tok_s / bound:.0%}); every row on the host {host:.1f} tok/s "
            f"({tok_s / host:.2f}x)"
        )
    return results
