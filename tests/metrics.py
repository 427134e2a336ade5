"""Read the server's GET /metrics (Prometheus text) into {"name{labels}": value}."""

from __future__ import annotations

import time

import httpx


def read_metrics(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def model_metric(base_url: str, name: str, model: str) -> float:
    """A model's metric; a KeyError when the server does not report it (a renamed metric must
    fail the test, never read as 0)."""
    metrics = read_metrics(base_url)
    key = f'{name}{{model="{model}"}}'
    if key not in metrics:
        raise KeyError(f"{key} is not in /metrics: {sorted(metrics)}")
    return metrics[key]


def sampled_tokens(server, before: float | None = None) -> float:
    """The tokens the engine of the server's model has sampled; with `before`, once the count
    differs from that (the llama.cpp child counts a reply as it releases its slot, after the
    last chunk)."""
    deadline = time.monotonic() + 10
    while True:
        count = model_metric(server.base_url, "mlxserve_engine_tokens_sampled", server.model_id)
        if before is None or count != before or time.monotonic() > deadline:
            return count
        time.sleep(0.05)
