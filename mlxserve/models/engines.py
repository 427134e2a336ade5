"""Starting a stored model on the engine that serves its format, with the server's options:
batch size from memory, the disk prompt cache's folder, and the draft model."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from pathlib import Path

from mlxserve.engine.base import EngineError, EngineModel
from mlxserve.engine.kv_quantization import kv_quantization
from mlxserve.models import memory
from mlxserve.models.adapters import adapter_records
from mlxserve.models.catalog import ModelCatalog
from mlxserve.models.defaults import is_apple_silicon
from mlxserve.models.loaded import RegistryError
from mlxserve.models.options import RegistryOptions
from mlxserve.models.speech import SPEECH_TYPE
from mlxserve.models.store import ModelRecord

ENGINE_FOR_FORMAT = {"mlx": "mlx", "gguf": "llamacpp"}
DISK_CACHE_FOLDER = ".prompt-cache"  # inside the store


class EngineStarter:
    def __init__(self, models_dir: Path, options: RegistryOptions, catalog: ModelCatalog):
        self.models_dir, self.options, self.catalog = models_dir, options, catalog

    async def start(
        self, record: ModelRecord, context_length: int, in_use_bytes: int
    ) -> EngineModel:
        """`in_use_bytes`: what the models already loaded take, for sizing the MLX batch."""
        if record.type == SPEECH_TYPE:  # Whisper runs on its own engine, whatever serves text
            module = await _import("mlxserve.engine.whisper.model")
            on_mlx = await asyncio.to_thread(whisper_on_mlx, self.options.engine)
            return await module.WhisperModel.load(record.id, record.directory, on_mlx)
        engine = self._engine_for(record)
        embedding = record.type == "embeddings"
        # An engine's first import (mlx-lm, transformers) takes about a second: in a thread, so
        # the streams of models already loaded keep flowing.
        if engine == "mlx" and embedding:
            module = await _import("mlxserve.engine.mlx.embedding")
            return await module.MLXEmbeddingModel.load(record.id, record.directory, context_length)
        if engine == "mlx" and record.type == "rerank":  # a cross-encoder, as embeddings are
            module = await _import("mlxserve.engine.mlx.cross_encoder")
            return await module.MLXCrossEncoder.load(record.id, record.directory, context_length)
        if engine == "mlx":
            module = await _import("mlxserve.engine.mlx.model")
            cache_bytes = self.options.prompt_cache_bytes
            shard_as = await self._distributed_id(record)
            budget = await asyncio.to_thread(
                self._mlx_kv_budget, record, context_length, in_use_bytes
            )
            return await module.MLXModel.load(
                record.directory,
                context_length,
                max_batch_size=self._mlx_batch_size(budget),
                kv_budget_tokens=budget,
                prompt_cache_bytes=cache_bytes,
                prompt_lookup=self.options.prompt_lookup,
                sample_on=self.options.sample_on,
                disk_cache=None if shard_as else await self._disk_cache(record),
                shard_as=shard_as,
                kv_quantization=kv_quantization(record.kv_bits, record.kv_group_size),
            )
        module = await _import("mlxserve.engine.llamacpp.model")
        draft = await asyncio.to_thread(self._llamacpp_draft, record)
        adapters = await asyncio.to_thread(_llamacpp_adapters, record)
        return await module.LlamaCppModel.load(
            record.id,
            gguf_file_of(record),
            context_length,
            server_binary=self.options.llama_server,
            parallel=memory.LLAMACPP_SLOTS,
            embedding=embedding or record.type == "rerank",
            pooling="rank" if record.type == "rerank" else "mean",
            prompt_cache_bytes=self.options.prompt_cache_bytes,
            mmproj=record.directory / record.mmproj_file if record.mmproj_file else None,
            prompt_lookup=self.options.prompt_lookup,
            draft=draft,
            kv_bits=record.kv_bits,
            adapters=adapters,
        )

    def _engine_for(self, record: ModelRecord) -> str:
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
        return engine

    async def _distributed_id(self, record: ModelRecord) -> str | None:
        """The id every rank loads the model under, when this server is rank 0 of a group; the
        group serves one model at a time (embedding models are served by rank 0 alone)."""
        if not self.options.distributed:
            return None
        module = await _import("mlxserve.engine.mlx.distributed.ranks")
        serving = module.current().model_id
        if serving is not None:
            raise RegistryError(
                409,
                f"this distributed server splits one model at a time across its ranks and "
                f"'{serving}' is loaded; unload it before loading '{record.id}'",
                "distributed_model_loaded",
            )
        return record.id

    def draft_bytes(self, record: ModelRecord) -> int:
        """What a llama.cpp model's draft model adds to its load: the child loads both."""
        draft = self._llamacpp_draft(record) if record.format == "gguf" else None
        found = self.catalog.find(draft[0]) if draft else None
        return memory.estimate_memory(found, 0).total_bytes if found else 0

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

    def _mlx_kv_budget(self, record: ModelRecord, context_length: int, in_use: int) -> int | None:
        available = memory.available_memory_bytes(in_use)
        cache_bytes = self.options.prompt_cache_bytes
        return memory.mlx_kv_budget_tokens(
            record, context_length, available, cache_bytes, self.options.ranks
        )

    def _mlx_batch_size(self, kv_budget_tokens: int | None) -> int:
        """Sequences decoded together at most; memory bounds them further by their tokens."""
        if self.options.max_batch_size:
            return self.options.max_batch_size
        return memory.MAX_MLX_BATCH if kv_budget_tokens else memory.DEFAULT_MLX_BATCH

    async def _disk_cache(self, record: ModelRecord):
        """The model's prompt cache on disk, in the store: one folder per model and version of
        its weights and KV cache bits, so a model never reads state of another kind; one bound
        for them all."""
        if self.options.disk_cache_bytes <= 0:
            return None
        module = await _import("mlxserve.engine.mlx.serving.disk_prompt_cache")
        config = record.directory / "config.json"
        version = f"{record.directory.resolve()}:{config.stat().st_mtime_ns}"
        if record.kv_bits:
            version += f":kv{record.kv_bits}g{record.kv_group_size}"
        folder = hashlib.sha256(version.encode()).hexdigest()[:16]
        root, bound = self.models_dir / DISK_CACHE_FOLDER, self.options.disk_cache_bytes
        return await asyncio.to_thread(module.DiskPromptCache, root, folder, bound, config)


async def _import(module: str):
    return await asyncio.to_thread(importlib.import_module, module)


def whisper_on_mlx(engine: str) -> bool:
    """Whisper's compute on MLX where MLX has a GPU (Metal, CUDA) or `--engine mlx` asks for it;
    CTranslate2, faster on a CPU, elsewhere and under `--engine llamacpp`."""
    if engine != "auto":
        return engine == "mlx"
    if is_apple_silicon():
        return True
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return mx.cuda.is_available()


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


def _llamacpp_adapters(record: ModelRecord):
    """The GGUF LoRA files of the adapters stored beside a language model (written on first use),
    and why each of the others cannot be served; llama-server reads them when it starts."""
    from mlxserve.engine.llamacpp.lora import child_adapters

    folders = [Path(adapter.path) for adapter in adapter_records(record)]
    return child_adapters(folders, gguf_file_of(record)) if folders else None
