"""The benchmarks scripts/bench.py runs, and what several of them share."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlxserve.models.defaults import ensure_default_model
from tests.server import ServerProcess


def default_model_servers(args) -> Iterator[tuple[str, ServerProcess, str]]:
    """(engine, a server on its default model, the model's id) for each engine asked for, one
    server at a time, in the store --models-dir names (else a fresh one)."""
    models_dir = getattr(args, "models_dir", None) or Path(tempfile.mkdtemp(prefix="bench-store-"))
    for engine in getattr(args, "engines", None) or ("llamacpp", "mlx"):
        model_id = ensure_default_model(models_dir, engine)
        with ServerProcess(models_dir, model=model_id, engine=engine) as server:
            yield engine, server, model_id
