"""What the server's options ask of the registry and the engines it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlxserve.engine.base import PROMPT_CACHE_BYTES
from mlxserve.engine.kv_quantization import DEFAULT_KV_GROUP_SIZE
from mlxserve.models.loaded import MAX_QUEUED

DISK_CACHE_BYTES = 4 * 1024**3  # long prompts' KV state each MLX model keeps on disk


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
    sample_on: str = "auto"  # auto | device | host: where MLX rows that allow it take their token
    draft_model: str | None = None  # drafts for requests that name none (speculative decoding)
    draft_models: tuple[str, ...] = ()  # what else a request's draft_model may name
    # tensor | pipeline: this server is rank 0 of an `mlx.launch` group that splits each MLX
    # model across its processes; None: each model is served by this process alone
    distributed: str | None = None
    ranks: int = 1  # the processes of that group, each holding its share of a model
    kv_bits: int | None = None  # 8 or 4: every model's KV cache quantized; None: full precision
    kv_group_size: int = DEFAULT_KV_GROUP_SIZE  # elements sharing one scale in that cache
