"""Every model mlxserve can serve: the store's own and, unless turned off, those discovered in
place. A store model wins over a discovered one with the same id. Lookups read the disk and may
rescan whole folders: the server calls them in threads, off its event loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mlxserve.models.adapters import adapter_records, find_adapter, split_adapter_id
from mlxserve.models.discovery import Roots, default_roots, discover
from mlxserve.models.store import ModelRecord, find_model, list_models

RESCAN_SECONDS = 2.0  # a request names a model often; the folders change rarely
MISS_RESCAN_SECONDS = 0.25  # an unknown id looks again sooner: it may have just arrived


class ModelCatalog:
    def __init__(self, models_dir: Path, discover_models: bool = True, roots: Roots | None = None):
        self.models_dir = models_dir
        self.roots = (roots or default_roots()) if discover_models else None
        self._discovered: list[ModelRecord] = []
        self._scanned_at = float("-inf")
        self._scanning = threading.Lock()  # lookups run in threads: one scan at a time

    def list(self) -> list[ModelRecord]:
        """Every model, each followed by the adapters stored beside it."""
        stored = list_models(self.models_dir)
        ids = {record.id for record in stored}
        models = stored + [r for r in self._discovered_now() if r.id not in ids]
        return [entry for model in models for entry in [model, *adapter_records(model)]]

    def find(self, model_id: str) -> ModelRecord | None:
        """The model of that id, or else the adapter a `base@adapter` id names (a model's own id
        may hold an `@` too: a discovered GGUF's quantization, `repo@Q4_K_M`)."""
        record = self._find_model(model_id)
        adapter = split_adapter_id(model_id)
        if record is None and adapter is not None:
            return find_adapter(self._find_model(adapter[0]), adapter[1])
        return record

    def _find_model(self, model_id: str) -> ModelRecord | None:
        record = find_model(self.models_dir, model_id)
        if record is None:
            record = self._discovered_by_id(model_id, RESCAN_SECONDS)
        if record is None:
            record = self._discovered_by_id(model_id, MISS_RESCAN_SECONDS)
        return record

    def _discovered_by_id(self, model_id: str, max_age: float) -> ModelRecord | None:
        return next((r for r in self._discovered_now(max_age) if r.id == model_id), None)

    def _discovered_now(self, max_age: float = RESCAN_SECONDS) -> list[ModelRecord]:
        if self.roots is None:
            return []
        with self._scanning:  # a lookup that waited for a scan uses its result
            if time.monotonic() - self._scanned_at > max_age:
                self._discovered = discover(self.roots)
                self._scanned_at = time.monotonic()
            return self._discovered
