"""What is loaded: model routing, loading on the engine that fits the model's format, unloading."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxserve.engine.base import EngineError, EngineModel
from mlxserve.models.store import ModelRecord, find_model, list_models

log = logging.getLogger(__name__)

ENGINE_FOR_FORMAT = {"mlx": "mlx", "gguf": "llamacpp"}


class RegistryError(EngineError):
    def __init__(self, status: int, message: str, code: str, param: str = "model"):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


@dataclass
class LoadedModel:
    record: ModelRecord
    engine: EngineModel
    identifier: str  # the id clients use; the store id unless loaded under another name
    ttl: float | None = None  # idle seconds before unloading
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    active_requests: int = 0


@dataclass
class RegistryOptions:
    engine: str = "auto"  # auto | mlx | llamacpp: which engines may load models
    jit: bool = True  # load a stored model when a request names it
    context_length: int | None = None
    llama_server: Path | None = None


class ModelRegistry:
    def __init__(self, models_dir: Path, options: RegistryOptions | None = None):
        self.models_dir = models_dir
        self.options = options or RegistryOptions()
        self.loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task] = {}

    def stored(self) -> list[ModelRecord]:
        return list_models(self.models_dir)

    async def resolve(self, requested: str) -> LoadedModel:
        """Route a request's `model` value: an exact id, else the only loaded model, else 404."""
        if requested in self.loaded:
            return self._touch(self.loaded[requested])
        if requested in self._loading:
            raise RegistryError(
                503, f"model '{requested}' is still loading; retry shortly", "model_loading"
            )
        record = find_model(self.models_dir, requested)
        if record is not None and self.options.jit:
            return self._touch(await self.load(record.id))
        if len(self.loaded) == 1 and (record is None or not self.options.jit):
            return self._touch(next(iter(self.loaded.values())))
        if self._loading and not self.loaded:
            busy = ", ".join(self._loading)
            raise RegistryError(
                503, f"model {busy} is still loading; retry shortly", "model_loading"
            )
        raise RegistryError(404, self._not_found_message(requested), "model_not_found")

    async def load(
        self,
        model_id: str,
        *,
        context_length: int | None = None,
        ttl: float | None = None,
        identifier: str | None = None,
    ) -> LoadedModel:
        identifier = identifier or model_id
        if identifier in self.loaded:
            return self.loaded[identifier]
        if self._loading:
            busy = ", ".join(self._loading)
            raise RegistryError(
                503, f"another model is loading ({busy}); retry shortly", "model_loading"
            )
        record = find_model(self.models_dir, model_id)
        if record is None:
            raise RegistryError(404, self._not_found_message(model_id), "model_not_found")
        task = asyncio.create_task(self._start_engine(record, context_length))
        self._loading[identifier] = task
        try:
            engine = await task
        finally:
            del self._loading[identifier]
        loaded = LoadedModel(record, engine, identifier, ttl)
        self.loaded[identifier] = loaded
        log.info(
            "loaded %s on %s (context %d)", identifier, engine.engine_name, engine.context_length
        )
        return loaded

    async def unload(self, identifier: str) -> None:
        loaded = self.loaded.pop(identifier, None)
        if loaded is None:
            raise RegistryError(404, f"model '{identifier}' is not loaded", "model_not_found")
        await loaded.engine.close()
        log.info("unloaded %s", identifier)

    async def close(self) -> None:
        for identifier in list(self.loaded):
            await self.unload(identifier)

    async def _start_engine(self, record: ModelRecord, context_length: int | None) -> EngineModel:
        engine = ENGINE_FOR_FORMAT.get(record.format)
        allowed = self.options.engine
        if engine is None or allowed not in ("auto", engine):
            raise RegistryError(
                400,
                f"model '{record.id}' is in {record.format} format, which the {allowed} engine "
                "does not serve (convert GGUF models with `mlxserve convert`)",
                "unsupported_model_format",
            )
        context_length = context_length or self.options.context_length
        if record.type == "embeddings":
            return await self._start_embedding_engine(record, engine)
        if engine == "mlx":
            from mlxserve.engine.mlx.model import MLXModel

            return await MLXModel.load(record, context_length=context_length)
        from mlxserve.engine.llamacpp.model import LlamaCppModel

        return await LlamaCppModel.load(
            record, context_length=context_length, server_binary=self.options.llama_server
        )

    async def _start_embedding_engine(self, record: ModelRecord, engine: str) -> EngineModel:
        if engine == "mlx":
            from mlxserve.engine.mlx.embedding import MLXEmbeddingModel

            return await MLXEmbeddingModel.load(record)
        from mlxserve.engine.llamacpp.model import LlamaCppModel

        return await LlamaCppModel.load(
            record, server_binary=self.options.llama_server, embedding=True
        )

    def _touch(self, loaded: LoadedModel) -> LoadedModel:
        loaded.last_used = time.monotonic()
        return loaded

    def _not_found_message(self, requested: str) -> str:
        if not self.loaded:
            return f"model '{requested}' not found, and no model is loaded"
        available = ", ".join(sorted(self.loaded))
        return f"model '{requested}' not found; loaded models: {available}"
