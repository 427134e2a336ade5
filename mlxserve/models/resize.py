"""Reloading a loaded model with a longer context, for a prompt beyond its loaded one but within
its trained maximum: once the requests on the present context finish (new ones wait for the
reload), with the longest context memory allows; a 400 that says why when it cannot be."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mlxserve.models import memory
from mlxserve.models.loaded import LoadedModel, RegistryError

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.05  # how often a reload waits for the model to have no request running


class ContextResizer:
    def __init__(self, registry: Any):
        self.registry = registry  # the ModelRegistry, which imports this module
        self._reloads: dict[str, asyncio.Task] = {}  # by the loaded model's identifier

    async def grow(self, loaded: LoadedModel, prompt_tokens: int, param: str) -> LoadedModel:
        """The model reloaded with a context that holds a prompt of `prompt_tokens` and a
        reply; a 400 when --context-length fixed the length, the model's maximum is shorter,
        or memory allows no more. Requests that ask at once share one reload."""
        task = self._reloads.get(loaded.identifier)
        if task is None:
            task = asyncio.create_task(self._reload_longer(loaded, prompt_tokens, param))
            self._reloads[loaded.identifier] = task
            task.add_done_callback(lambda _: self._reloads.pop(loaded.identifier, None))
        return await asyncio.shield(task)

    async def settled(self) -> None:
        """Wait for reloads in progress, so no new request keeps an old context busy."""
        for task in list(self._reloads.values()):
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _reload_longer(self, loaded: LoadedModel, prompt_tokens: int, param: str):
        registry, record = self.registry, loaded.record
        context, trained = loaded.engine.context_length, record.max_context_length

        def refused(why: str) -> RegistryError:
            message = f"the prompt has {prompt_tokens} tokens, which leaves no room in the "
            message += f"model's {context}-token context; {why}"
            return RegistryError(400, message, "context_length_exceeded", param=param)

        if registry.options.context_length:
            most = f" (the model's maximum is {trained})" if trained else ""
            raise refused(f"the server's --context-length sets it: raise it{most}")
        if not trained or prompt_tokens >= trained:
            raise refused(f"the model's maximum context is {trained or 'unknown'}")
        while loaded.active_requests:  # requests on the present context finish first
            await asyncio.sleep(IDLE_POLL_SECONDS)
        freed = registry.freed_by_unloading(loaded)
        in_use = registry.in_use_bytes() - freed
        choice, _, _ = await asyncio.to_thread(
            memory.size_for_load, record, None, in_use, freed, registry.options.ranks
        )
        if choice.length <= prompt_tokens:
            raise refused(
                f"memory allows at most {choice.length} tokens ({choice.reason}); "
                "free memory, or set --context-length"
            )
        log.info(
            "reloading %s with a %d-token context for a %d-token prompt (was %d)",
            loaded.identifier, choice.length, prompt_tokens, context,
        )  # fmt: skip
        if registry.loaded.get(loaded.identifier) is loaded:
            await registry.unload(loaded.identifier)
        return await registry.load(
            record.id,
            context_length=choice.length,
            ttl=loaded.ttl,
            identifier=loaded.identifier,
            jit=loaded.jit,
            tool_format=loaded.tool_format,
            kv_bits=record.kv_bits,
            kv_group_size=record.kv_group_size,
        )
