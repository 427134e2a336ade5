"""Quantized KV cache (`--kv-bits`) on the default model (Gemma 3 270M), MLX engine.

Reported: KV bytes per token as MLX allocates them (read from the cache arrays after a prompt),
for the layers whose cache grows with the context and for the whole cache (Gemma's sliding-window
layers stay at their 512-token window, at full precision), at 8 and 4 bits against full precision;
and aggregate tok/s of 8 concurrent streams with `--kv-bits 8` against without, and against
mlx_lm.server with `--kv-bits 8` (which serves such requests one at a time), the servers warmed
up and measured in turns, the best of each one's runs taken.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import RotatingKVCache

from mlxserve.engine.kv_quantization import KVQuantization
from mlxserve.models.defaults import ensure_default_model
from scripts.benchmarks.mlx_engine import MlxLmServer, concurrent_throughput
from tests.server import ServerProcess

PROMPT_TOKENS = 1024
STREAMS = 8
RUNS = 3


def cache_bytes_per_token(model_path: Path, quantization: KVQuantization | None) -> dict:
    """Allocated bytes per prompt token: the full-context layers alone, and the whole cache."""
    from mlx_lm import load

    from mlxserve.engine.mlx.architectures.text_model import TextModel

    model, _ = load(str(model_path))
    cache = TextModel(model, quantization).make_cache()
    model(mx.arange(PROMPT_TOKENS)[None], cache=cache)
    mx.eval([layer.state for layer in cache])
    growing = [layer for layer in cache if not isinstance(layer, RotatingKVCache)]
    return {
        "full_context_layers": sum(layer.nbytes for layer in growing) / PROMPT_TOKENS,
        "whole_cache": sum(layer.nbytes for layer in cache) / PROMPT_TOKENS,
    }


def aggregate_tok_s(models_dir: Path, model_id: str, tokens: int) -> tuple[float, float, float]:
    """8 streams' tok/s without and with `--kv-bits 8`, and mlx_lm.server's with it: all servers
    up at once and measured in turns, so a busy machine's slow spell falls on each alike."""
    kv8 = ("--kv-bits", "8")
    peer = MlxLmServer(str(models_dir / model_id), kv8)
    try:
        with (
            ServerProcess(models_dir, model=model_id, engine="mlx") as full,
            ServerProcess(models_dir, model=model_id, engine="mlx", extra_args=kv8) as quantized,
        ):
            peer.wait()
            servers = {full.base_url: model_id, quantized.base_url: model_id}
            servers[peer.base_url] = peer.model
            best = dict.fromkeys(servers, 0.0)
            for url, model in servers.items():
                concurrent_throughput(url, model, STREAMS, 4)  # warm-up
            for _ in range(RUNS):
                for url, model in servers.items():
                    rate = concurrent_throughput(url, model, STREAMS, tokens)
                    best[url] = max(best[url], rate)
            return best[full.base_url], best[quantized.base_url], best[peer.base_url]
    finally:
        peer.stop()


def run(args) -> dict:
    tokens = getattr(args, "iterations", None) or 24
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    model_id = ensure_default_model(models_dir, "mlx")
    path = models_dir / model_id
    full = cache_bytes_per_token(path, None)
    results: dict = {"full_precision_bytes_per_token": full}
    for bits in (8, 4):
        quantized = cache_bytes_per_token(path, KVQuantization(bits))
        results[f"kv{bits}_bytes_per_token"] = quantized
        for part in full:
            results[f"kv{bits}_{part}_ratio"] = round(quantized[part] / full[part], 3)
    without, with_kv8, peer_kv8 = aggregate_tok_s(models_dir, model_id, tokens)
    results |= {
        f"tok_s_{STREAMS}_streams": round(without, 2),
        f"tok_s_{STREAMS}_streams_kv8": round(with_kv8, 2),
        f"mlx_lm_server_tok_s_{STREAMS}_streams_kv8": round(peer_kv8, 2),
        "kv8_throughput_ratio": round(with_kv8 / without, 3),
        "kv8_against_mlx_lm_server_kv8": round(with_kv8 / peer_kv8, 3),
    }
    for name, value in results.items():
        print(f"{name:>36}: {value}")
    return results
