"""What is loaded: model routing, loading on the engine that fits the model's format, unloading.

Lifecycle: a request naming a stored model loads it (JIT); a model with a TTL is unloaded after
that many idle seconds (no active request, none started or finished within the TTL);
`max_loaded` evicts the least recently used idle model before another loads; and a load that
would not fit in memory is refused up front.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from mlxserve.engine.base import EngineModel
from mlxserve.models import memory
from mlxserve.models.adapter_models import AdapterEngine, LoadedAdapter, adapters_of
from mlxserve.models.adapters import split_adapter_id
from mlxserve.models.catalog import ModelCatalog
from mlxserve.models.engines import EngineStarter
from mlxserve.models.idle import IdleUnloader
from mlxserve.models.kv_options import with_kv_options
from mlxserve.models.loaded import LoadedModel, RegistryError, counted_bytes, engine_groups
from mlxserve.models.options import RegistryOptions
from mlxserve.models.resize import ContextResizer
from mlxserve.models.store import ModelRecord

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, models_dir: Path, options: RegistryOptions | None = None):
        self.models_dir = models_dir
        self.options = options or RegistryOptions()
        self.catalog = ModelCatalog(models_dir, self.options.discover)
        self.engines = EngineStarter(models_dir, self.options, self.catalog)
        self.loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self.resizer = ContextResizer(self)
        self.idle = IdleUnloader(self)

    @property
    def loading(self) -> list[str]:
        return list(self._loading)

    def servable(self) -> list[ModelRecord]:
        """Every model this server can load: the store's and those found in place. Reads the
        disk: call it off the event loop."""
        return self.catalog.list()

    async def find(self, model_id: str) -> ModelRecord | None:
        """The servable model of that id; looked up off the event loop, as an unknown id may
        rescan the folders models are found in."""
        return await asyncio.to_thread(self.catalog.find, model_id)

    async def route(self, requested: str) -> ModelRecord | None:
        """The stored model a request for `requested` would reach, without loading anything
        (None when it would be a 404)."""
        if requested in self.loaded:
            return self.loaded[requested].record
        record = await self.find(requested)
        if record is not None and self.options.jit:
            return record
        if len(self.loaded) == 1 and split_adapter_id(requested) is None:
            return next(iter(self.loaded.values())).record
        return None

    async def resolve(self, requested: str, *, ttl: float | None = None) -> LoadedModel:
        """Route a request's `model` value: an exact id, else the only loaded model, else 404.

        `ttl` (the request's field) applies when this request is what loads the model."""
        await self.resizer.settled()
        if requested in self.loaded:
            return self._touch(self.loaded[requested])
        if requested in self._loading:
            self._refuse_while_loading(requested)
        loaded = await self.load_on_request(requested, ttl=ttl)
        if loaded is not None:
            return self._touch(loaded)
        if split_adapter_id(requested) is not None:  # the base alone would answer as if adapted
            raise RegistryError(404, self._not_found_message(requested), "model_not_found")
        if len(self.loaded) == 1:
            return self._touch(next(iter(self.loaded.values())))
        if self._loading and not self.loaded:
            busy = ", ".join(self._loading)
            raise RegistryError(
                503, f"model {busy} is still loading; retry shortly", "model_loading"
            )
        raise RegistryError(404, self._not_found_message(requested), "model_not_found")

    async def load_on_request(
        self, requested: str, *, ttl: float | None = None, context_length: int | None = None
    ) -> LoadedModel | None:
        """JIT: the stored model a request names, loaded for it (with the server's TTL unless
        the request sets one); None when JIT is off or no stored model has that id."""
        if not self.options.jit:
            return None
        record = await self.find(requested)
        if record is None:
            return None
        ttl = ttl or self.options.ttl
        return await self.load(record.id, context_length=context_length, ttl=ttl, jit=True)

    async def load(
        self,
        model_id: str,
        *,
        context_length: int | None = None,
        ttl: float | None = None,
        identifier: str | None = None,
        jit: bool = False,
        tool_format: str | None = None,
        kv_bits: int | None = None,
        kv_group_size: int | None = None,
    ) -> LoadedModel:
        identifier = identifier or model_id
        record = await self.find(model_id)
        if identifier in self.loaded:  # checked after the wait: another request may have loaded it
            return self.loaded[identifier]
        if record is None:
            raise RegistryError(404, self._not_found_message(model_id), "model_not_found")
        if record.type == "adapter":
            return await self._load_adapter(record, identifier, ttl, jit)
        self._refuse_while_loading(identifier)
        record = with_kv_options(record, kv_bits, kv_group_size, self.options)
        requested = context_length or self.options.context_length
        holder = self._holder_of(record, requested)
        if holder is not None:  # the same weights with the same settings: one copy in memory
            engine, needed, reason = (
                holder.engine,
                holder.memory_bytes,
                f"shared with {holder.identifier}",
            )
        else:
            # No wait between the check and this: one load at a time, never two of one model.
            task = asyncio.create_task(self._make_room_and_start(record, requested))
            self._loading[identifier] = task
            try:
                engine, needed, reason = await task
            finally:
                del self._loading[identifier]
        loaded = LoadedModel(
            record, engine, identifier, ttl, jit=jit, memory_bytes=needed,
            tool_format=tool_format or "", requested_context=requested,
        )  # fmt: skip
        if self.options.max_queued is not None:
            loaded.max_requests = engine.parallel + self.options.max_queued
        self.loaded[identifier] = loaded
        self.idle.watch()
        log.info(
            "loaded %s on %s (context %d: %s; ttl %s)",
            identifier,
            engine.engine_name,
            engine.context_length,
            reason,
            "none" if ttl is None else f"{ttl:g} s",
        )
        return loaded

    def _holder_of(self, record: ModelRecord, requested: int | None) -> LoadedModel | None:
        """A loaded model whose engine another identifier can share: the same stored model,
        asked for with the same context and KV cache settings (tool formats and TTLs are the
        registry's, per identifier). A server's engines take no other per-load setting."""
        for loaded in self.loaded.values():
            if (
                not isinstance(loaded, LoadedAdapter)
                and loaded.record.id == record.id
                and loaded.requested_context == requested
                and (loaded.record.kv_bits, loaded.record.kv_group_size)
                == (record.kv_bits, record.kv_group_size)
            ):
                return loaded
        return None

    def _refuse_while_loading(self, identifier: str) -> None:
        if identifier in self._loading:  # two requests for one model while it loads
            raise RegistryError(
                503, f"model '{identifier}' is still loading; retry shortly", "model_loading"
            )
        if self._loading:
            busy = ", ".join(self._loading)
            raise RegistryError(
                503, f"another model is loading ({busy}); retry shortly", "model_loading"
            )

    async def _load_adapter(
        self, record: ModelRecord, identifier: str, ttl: float | None, jit: bool
    ) -> LoadedModel:
        """Load the adapter's base model if it is not loaded (as any load would), then the
        adapter into it, registered under `identifier`."""
        base = await self.load(record.source, ttl=ttl, jit=jit)
        name = record.directory.name
        nbytes = await base.engine.load_adapter(name, record.directory)
        if identifier in self.loaded:  # another request loaded it meanwhile
            return self.loaded[identifier]
        engine = AdapterEngine(base.engine, name)
        loaded = LoadedAdapter(
            record, engine, identifier, ttl, jit=jit, memory_bytes=nbytes, base=base
        )
        self.loaded[identifier] = loaded
        self.idle.watch()
        log.info("loaded adapter %s into %s (%d bytes)", identifier, base.identifier, nbytes)
        return loaded

    async def grow_context(
        self, loaded: LoadedModel, prompt_tokens: int, param: str
    ) -> LoadedModel:
        """The model reloaded with a longer context for a longer prompt (models/resize.py)."""
        return await self.resizer.grow(loaded, prompt_tokens, param)

    async def unload(self, identifier: str) -> None:
        loaded = self.loaded.pop(identifier, None)
        if loaded is None:
            raise RegistryError(404, f"model '{identifier}' is not loaded", "model_not_found")
        for adapter in adapters_of(self.loaded, loaded):  # they go with the base's engine
            self.loaded.pop(adapter)
        if not self._engine_shared(loaded):
            await loaded.engine.close()  # its last identifier
        log.info("unloaded %s", identifier)

    async def close(self) -> None:
        self.idle.stop()
        for identifier in list(self.loaded):
            try:
                await self.unload(identifier)
            except Exception:  # noqa: BLE001 - one model failing to close must not keep the rest
                log.exception("unloading %s failed", identifier)

    async def _make_room_and_start(
        self, record: ModelRecord, requested: int | None
    ) -> tuple[EngineModel, int, str]:
        """Choose the context, check memory (counting what evictions would free), evict, then
        start the engine; returns it, its estimate and why its context is what it is."""
        victims = self._eviction_victims()
        freed = counted_bytes(victims)  # whole engines: every identifier that shares one
        # Headers and configs are read, and macOS asked for its free pages: off the event loop.
        in_use = self.in_use_bytes() - freed
        choice, estimate, available = await asyncio.to_thread(
            memory.size_for_load, record, requested, in_use, freed, self.options.ranks
        )
        needed = estimate.total_bytes + await asyncio.to_thread(self.engines.draft_bytes, record)
        self._check_memory(record, needed, available)
        for victim in victims:
            log.info("evicting %s (least recently used) to load %s", victim.identifier, record.id)
            await self.unload(victim.identifier)
        try:
            engine = await self.engines.start(record, choice.length, self.in_use_bytes())
        except RegistryError:
            raise
        except Exception as exc:  # a corrupt or truncated file: said plainly, the server stays up
            log.exception("loading %s failed", record.id)
            message = f"model '{record.id}' could not be loaded from {record.directory}: {exc}"
            raise RegistryError(500, message, "model_load_failed") from exc
        return engine, needed, choice.reason

    def _eviction_victims(self) -> list[LoadedModel]:
        """The least recently used idle engines beyond --max-loaded, each with every identifier
        that shares it."""
        limit = self.options.max_loaded
        sharing = engine_groups(self.loaded.values())
        if not limit or len(sharing) < limit:
            return []
        idle = sorted(
            (group for group in sharing if not any(m.active_requests for m in group)),
            key=lambda group: max(m.last_used for m in group),
        )
        excess = len(sharing) - limit + 1
        if len(idle) < excess:
            raise RegistryError(
                503,
                f"{len(sharing)} models are loaded (the limit is {limit}) and all are busy; "
                "retry when a request finishes",
                "max_loaded_models",
            )
        return [loaded for group in idle[:excess] for loaded in group]

    async def admit_draft(self, loaded: LoadedModel, draft: ModelRecord) -> None:
        """A draft model loads into its target's runner when a request first names it: its
        weights are checked against free memory first (507 naming draft_model), then counted
        with the target's."""
        if draft.id in loaded.drafts:
            return
        needed = memory.estimate_memory(draft, 0).total_bytes
        available = await asyncio.to_thread(memory.available_memory_bytes, self.in_use_bytes())
        self._check_memory(draft, needed, available, param="draft_model")
        if draft.id not in loaded.drafts:  # another request may have counted it meanwhile
            loaded.drafts.add(draft.id)
            loaded.memory_bytes += needed

    def in_use_bytes(self) -> int:
        """What the loaded models were admitted with, by their estimates."""
        return counted_bytes(self.loaded.values())

    def freed_by_unloading(self, loaded: LoadedModel) -> int:
        """The bytes unloading `loaded` alone would free: none while another identifier
        shares its engine."""
        return 0 if self._engine_shared(loaded) else loaded.memory_bytes

    def _engine_shared(self, loaded: LoadedModel) -> bool:
        """Whether another loaded identifier runs on `loaded`'s engine."""
        return any(m is not loaded and m.engine is loaded.engine for m in self.loaded.values())

    def _check_memory(
        self, record: ModelRecord, needed: int, available: int | None, param: str = "model"
    ) -> None:
        if available is None:
            return
        if needed > available:
            raise RegistryError(
                507,
                f"model '{record.id}' needs ~{memory.format_gib(needed)} GiB, only "
                f"{memory.format_gib(available)} GiB available",
                "insufficient_memory",
                param,
            )

    def _touch(self, loaded: LoadedModel) -> LoadedModel:
        loaded.last_used = time.monotonic()
        return loaded

    def _not_found_message(self, requested: str) -> str:
        if not self.loaded:
            return f"model '{requested}' not found, and no model is loaded"
        available = ", ".join(sorted(self.loaded))
        return f"model '{requested}' not found; loaded models: {available}"
