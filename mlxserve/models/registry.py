"""What is loaded: model routing, loading on the engine that fits the model's format, unloading.

Lifecycle: a request naming a stored model loads it (JIT); a model with a TTL is unloaded after
that many idle seconds (no active request, none started or finished within the TTL);
`max_loaded` evicts the least recently used idle model before another loads; and a load that
would not fit in memory is refused up front.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxserve.engine.base import PROMPT_CACHE_BYTES, EngineError, EngineModel
from mlxserve.models import memory
from mlxserve.models.catalog import ModelCatalog
from mlxserve.models.store import ModelRecord

log = logging.getLogger(__name__)

ENGINE_FOR_FORMAT = {"mlx": "mlx", "gguf": "llamacpp"}
TTL_CHECK_SECONDS = 1.0
MAX_QUEUED = 256  # requests per model waiting for a decoding slot before new ones get a 429
QUEUE_FULL_RETRY_SECONDS = 2  # the Retry-After of a 429: about one short reply's time
DISK_CACHE_BYTES = 4 * 1024**3  # long prompts' KV state each MLX model keeps on disk
DISK_CACHE_FOLDER = ".prompt-cache"  # inside the store


class RegistryError(EngineError):
    def __init__(self, status: int, message: str, code: str, param: str = "model", headers=None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param
        self.headers: dict[str, str] = headers or {}


@dataclass
class LoadedModel:
    record: ModelRecord
    engine: EngineModel
    identifier: str  # the id clients use; the store id unless loaded under another name
    ttl: float | None = None  # idle seconds before unloading
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    jit: bool = False  # loaded because a request named it
    memory_bytes: int = 0  # the estimate the load was admitted with
    max_requests: int | None = None  # running and waiting at once; None: no bound
    rejected_requests: int = 0  # refused because the queue was full
    _active_requests: int = field(default=0, repr=False)

    @property
    def active_requests(self) -> int:
        return self._active_requests

    @active_requests.setter
    def active_requests(self, count: int) -> None:
        # The idle clock restarts whenever a request starts or ends.
        self._active_requests = count
        self.last_used = time.monotonic()

    def admit(self) -> Callable[[], None]:
        """Count a request in, or refuse it with a 429 when the model's queue is full; returns
        the request's release, which counts it out once however often it is called."""
        if self.max_requests is not None and self._active_requests >= self.max_requests:
            self.rejected_requests += 1
            raise RegistryError(
                429,
                f"model '{self.identifier}' has {self._active_requests} requests running or "
                f"waiting, its limit (--max-queued); retry shortly",
                "queue_full",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
            )
        self.active_requests += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active_requests -= 1

        return release

    def idle_seconds(self, now: float | None = None) -> float:
        if self._active_requests:
            return 0.0
        return max((now or time.monotonic()) - self.last_used, 0.0)

    def is_expired(self, now: float | None = None) -> bool:
        return (
            self.ttl is not None
            and not self._active_requests
            and (self.idle_seconds(now) >= self.ttl)
        )


@dataclass
class RegistryOptions:
    engine: str = "auto"  # auto | mlx | llamacpp: which engines may load models
    jit: bool = True  # load a stored model when a request names it
    context_length: int | None = None
    llama_server: Path | None = None
    ttl: float | None = None  # default idle TTL for JIT-loaded models; None: never unload
    max_loaded: int | None = None  # evict the least recently used idle model beyond this
    prompt_cache_bytes: int = PROMPT_CACHE_BYTES  # per MLX model
    max_queued: int | None = MAX_QUEUED  # waiting requests per model beyond its decoding slots
    discover: bool = False  # also serve models found in the Hugging Face cache and LM Studio
    prompt_lookup: bool = False  # decode speculatively from the prompt when a request does not say
    disk_cache_bytes: int = DISK_CACHE_BYTES  # long prompts' KV state on disk; 0: none
    max_batch_size: int | None = None  # MLX sequences decoded together; None: from memory
    draft_model: str | None = None  # drafts for requests that name none (speculative decoding)


class ModelRegistry:
    def __init__(self, models_dir: Path, options: RegistryOptions | None = None):
        self.models_dir = models_dir
        self.options = options or RegistryOptions()
        self.catalog = ModelCatalog(models_dir, self.options.discover)
        self.loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._ttl_monitor: asyncio.Task | None = None

    @property
    def loading(self) -> list[str]:
        return list(self._loading)

    def stored(self) -> list[ModelRecord]:
        return self.catalog.list()

    def route(self, requested: str) -> ModelRecord | None:
        """The stored model a request for `requested` would reach, without loading anything
        (None when it would be a 404)."""
        if requested in self.loaded:
            return self.loaded[requested].record
        record = self.catalog.find(requested)
        if record is not None and self.options.jit:
            return record
        if len(self.loaded) == 1:
            return next(iter(self.loaded.values())).record
        return None

    async def resolve(self, requested: str, *, ttl: float | None = None) -> LoadedModel:
        """Route a request's `model` value: an exact id, else the only loaded model, else 404.

        `ttl` (the request's field) applies when this request is what loads the model."""
        if requested in self.loaded:
            return self._touch(self.loaded[requested])
        if requested in self._loading:
            raise RegistryError(
                503, f"model '{requested}' is still loading; retry shortly", "model_loading"
            )
        record = self.catalog.find(requested)
        if record is not None and self.options.jit:
            loaded = await self.load(record.id, ttl=ttl or self.options.ttl, jit=True)
            return self._touch(loaded)
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
        jit: bool = False,
    ) -> LoadedModel:
        identifier = identifier or model_id
        if identifier in self.loaded:
            return self.loaded[identifier]
        if self._loading:
            busy = ", ".join(self._loading)
            raise RegistryError(
                503, f"another model is loading ({busy}); retry shortly", "model_loading"
            )
        record = self.catalog.find(model_id)
        if record is None:
            raise RegistryError(404, self._not_found_message(model_id), "model_not_found")
        requested = context_length or self.options.context_length
        context_length = memory.loaded_context_length(record, requested)
        task = asyncio.create_task(self._make_room_and_start(record, context_length))
        self._loading[identifier] = task
        try:
            engine, needed = await task
        finally:
            del self._loading[identifier]
        loaded = LoadedModel(record, engine, identifier, ttl, jit=jit, memory_bytes=needed)
        if self.options.max_queued is not None:
            loaded.max_requests = engine.parallel + self.options.max_queued
        self.loaded[identifier] = loaded
        self._start_ttl_monitor()
        log.info(
            "loaded %s on %s (context %d, ttl %s)",
            identifier,
            engine.engine_name,
            engine.context_length,
            "none" if ttl is None else f"{ttl:g} s",
        )
        return loaded

    async def unload(self, identifier: str) -> None:
        loaded = self.loaded.pop(identifier, None)
        if loaded is None:
            raise RegistryError(404, f"model '{identifier}' is not loaded", "model_not_found")
        await loaded.engine.close()
        log.info("unloaded %s", identifier)

    async def unload_expired(self) -> list[str]:
        """Unload every model whose idle TTL has run out; returns their identifiers."""
        now = time.monotonic()
        expired = [m.identifier for m in self.loaded.values() if m.is_expired(now)]
        for identifier in expired:
            log.info("%s was idle for its TTL; unloading", identifier)
            await self.unload(identifier)
        return expired

    async def close(self) -> None:
        if self._ttl_monitor is not None:
            self._ttl_monitor.cancel()
            self._ttl_monitor = None
        for identifier in list(self.loaded):
            await self.unload(identifier)

    def _start_ttl_monitor(self) -> None:
        if self._ttl_monitor is None or self._ttl_monitor.done():
            self._ttl_monitor = asyncio.create_task(self._unload_expired_forever())

    async def _unload_expired_forever(self) -> None:
        while True:
            await asyncio.sleep(TTL_CHECK_SECONDS)
            try:
                await self.unload_expired()
            except Exception:  # noqa: BLE001 - a failed close must not stop later unloads
                log.exception("unloading an idle model failed")

    async def _make_room_and_start(
        self, record: ModelRecord, context_length: int
    ) -> tuple[EngineModel, int]:
        """Check memory (counting what evictions would free), evict, then start the engine."""
        victims = self._eviction_victims()
        estimate = memory.estimate_memory(record, context_length)
        freed = sum(victim.memory_bytes for victim in victims)
        self._check_memory(record, estimate.total_bytes, freed)
        for victim in victims:
            log.info("evicting %s (least recently used) to load %s", victim.identifier, record.id)
            await self.unload(victim.identifier)
        try:
            engine = await self._start_engine(record, context_length)
        except RegistryError:
            raise
        except Exception as exc:  # a corrupt or truncated file: said plainly, the server stays up
            log.exception("loading %s failed", record.id)
            message = f"model '{record.id}' could not be loaded from {record.directory}: {exc}"
            raise RegistryError(500, message, "model_load_failed") from exc
        return engine, estimate.total_bytes

    def _eviction_victims(self) -> list[LoadedModel]:
        limit = self.options.max_loaded
        if not limit or len(self.loaded) < limit:
            return []
        idle = sorted(
            (m for m in self.loaded.values() if not m.active_requests), key=lambda m: m.last_used
        )
        excess = len(self.loaded) - limit + 1
        if len(idle) < excess:
            raise RegistryError(
                503,
                f"{len(self.loaded)} models are loaded (the limit is {limit}) and all are busy; "
                "retry when a request finishes",
                "max_loaded_models",
            )
        return idle[:excess]

    def _check_memory(self, record: ModelRecord, needed: int, freed: int) -> None:
        in_use = sum(m.memory_bytes for m in self.loaded.values()) - freed
        available = memory.available_memory_bytes(in_use)
        if available is None:
            return
        if memory.memory_limit_bytes() is None:
            available += freed  # the system figure does not yet count what eviction frees
        if needed > available:
            raise RegistryError(
                507,
                f"model '{record.id}' needs ~{memory.format_gib(needed)} GiB, only "
                f"{memory.format_gib(available)} GiB available",
                "insufficient_memory",
            )

    async def _start_engine(self, record: ModelRecord, context_length: int) -> EngineModel:
        engine = ENGINE_FOR_FORMAT.get(record.format)
        allowed = self.options.engine
        if record.format == "hf":
            raise RegistryError(
                400,
                f"model '{record.id}' is a Hugging Face checkpoint that needs converting first: "
                f"mlxserve convert {record.path}",
                "unsupported_model_format",
            )
        if engine is None or allowed not in ("auto", engine):
            raise RegistryError(
                400,
                f"model '{record.id}' is in {record.format} format, which the {allowed} engine "
                "does not serve (convert GGUF models with `mlxserve convert`)",
                "unsupported_model_format",
            )
        embedding = record.type == "embeddings"
        # An engine's first import (mlx-lm, transformers) takes about a second: in a thread, so
        # the streams of models already loaded keep flowing.
        if engine == "mlx" and embedding:
            module = await _import("mlxserve.engine.mlx.embedding")
            return await module.MLXEmbeddingModel.load(record.id, record.directory, context_length)
        if engine == "mlx":
            module = await _import("mlxserve.engine.mlx.model")
            return await module.MLXModel.load(
                record.directory,
                context_length,
                max_batch_size=self._mlx_batch_size(record, context_length),
                prompt_cache_bytes=self.options.prompt_cache_bytes,
                prompt_lookup=self.options.prompt_lookup,
                disk_cache=await self._disk_cache(record),
            )
        module = await _import("mlxserve.engine.llamacpp.model")
        return await module.LlamaCppModel.load(
            record.id,
            gguf_file_of(record),
            context_length,
            server_binary=self.options.llama_server,
            parallel=memory.LLAMACPP_SLOTS,
            embedding=embedding,
            prompt_cache_bytes=self.options.prompt_cache_bytes,
            mmproj=record.directory / record.mmproj_file if record.mmproj_file else None,
            prompt_lookup=self.options.prompt_lookup,
            draft=self._llamacpp_draft(record),
        )

    def _llamacpp_draft(self, record: ModelRecord) -> tuple[str, Path] | None:
        """The server's draft model for a llama.cpp model: a GGUF of the same architecture
        (llama.cpp refuses to start with a draft whose vocabulary differs)."""
        name = self.options.draft_model
        draft = self.catalog.find(name) if name else None
        if draft is None or draft.format != "gguf" or record.type != "llm":
            return None
        if draft.architecture != record.architecture:
            return None
        return draft.id, gguf_file_of(draft)

    def _mlx_batch_size(self, record: ModelRecord, context_length: int) -> int:
        if self.options.max_batch_size:
            return self.options.max_batch_size
        in_use = sum(m.memory_bytes for m in self.loaded.values())
        available = memory.available_memory_bytes(in_use)
        cache_bytes = self.options.prompt_cache_bytes
        return memory.mlx_batch_size(record, context_length, available, cache_bytes)

    async def _disk_cache(self, record: ModelRecord):
        """The model's prompt cache on disk, in the store: one folder per model and version of
        its weights, so a changed model never reads another's state."""
        if self.options.disk_cache_bytes <= 0:
            return None
        module = await _import("mlxserve.engine.mlx.disk_cache")
        config = record.directory / "config.json"
        version = f"{record.directory.resolve()}:{config.stat().st_mtime_ns}"
        folder = hashlib.sha256(version.encode()).hexdigest()[:16]
        directory = self.models_dir / DISK_CACHE_FOLDER / folder
        return module.DiskPromptCache(directory, self.options.disk_cache_bytes)

    def _touch(self, loaded: LoadedModel) -> LoadedModel:
        loaded.last_used = time.monotonic()
        return loaded

    def _not_found_message(self, requested: str) -> str:
        if not self.loaded:
            return f"model '{requested}' not found, and no model is loaded"
        available = ", ".join(sorted(self.loaded))
        return f"model '{requested}' not found; loaded models: {available}"


async def _import(module: str):
    return await asyncio.to_thread(importlib.import_module, module)


def gguf_file_of(record: ModelRecord) -> Path:
    """The record's GGUF file; a directory holding exactly one .gguf needs no file name."""
    candidates = (
        [record.directory / record.gguf_file]
        if record.gguf_file
        else sorted(record.directory.glob("*.gguf"))
    )
    if record.format != "gguf" or len(candidates) != 1 or not candidates[0].is_file():
        raise EngineError(f"model '{record.id}' has no single GGUF file in {record.directory}")
    return candidates[0]
