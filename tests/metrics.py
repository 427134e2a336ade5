"""Read the server's GET /metrics (Prometheus text) into {"name{labels}": value}."""

from __future__ import annotations

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
