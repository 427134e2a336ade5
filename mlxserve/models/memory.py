"""How much memory a model needs once loaded, and how much the machine has to give.

The estimate is weights (their size on disk) + the KV cache for the loaded context
(layers x kv_heads x head_dim x context x 2 for keys and values x bytes per element, fewer bytes
when the model loads with `kv_bits`) + overhead.
`MLXSERVE_MEMORY_LIMIT_BYTES` caps what all loaded models together may use, in place of the
memory the operating system reports as available.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlxserve.engine.kv_quantization import LLAMACPP_BLOCK_BYTES, kv_quantization
from mlxserve.gguf_header import read_scalar_fields
from mlxserve.models.store import ModelRecord

MEMORY_LIMIT_ENV = "MLXSERVE_MEMORY_LIMIT_BYTES"
DEFAULT_CONTEXT_LENGTH = 4096  # for a model whose trained maximum is unknown
# An automatic context may plan on this share of the available memory (weights, KV for every
# slot, overhead); the rest stays for the system, activations and the prompt cache.
CONTEXT_MEMORY_SHARE = 0.75
CONTEXT_STEP = 1024  # a context sized down to fit memory is a multiple of this
# Activations, scratch buffers and the runtime itself: a fixed part plus a share of the weights.
FIXED_OVERHEAD_BYTES = 256 * 1024**2
WEIGHTS_OVERHEAD_RATIO = 0.10
GIB = 1024**3


@dataclass(frozen=True)
class AttentionShape:
    layers: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    context_length: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes


@dataclass(frozen=True)
class ContextChoice:
    length: int
    reason: str  # why this length, for the load's log line


def choose_context_length(
    record: ModelRecord, requested: int | None, available: int | None, ranks: int = 1
) -> ContextChoice:
    """The one context policy for every engine: a requested length (a load request's, else
    the server's --context-length) capped by the model's trained maximum; else that maximum
    when its estimate, KV for every slot counted, fits the memory share; else the largest
    length that fits; never below the old fixed default, which the memory check then judges."""
    trained = record.max_context_length
    if requested:
        if trained and requested > trained:
            return ContextChoice(trained, f"{requested} requested, capped by the model's maximum")
        return ContextChoice(requested, "requested")
    if not trained:
        return ContextChoice(DEFAULT_CONTEXT_LENGTH, "the model's maximum is unknown")
    if available is None:
        return ContextChoice(trained, "the model's maximum; free memory unknown")
    budget = int(available * CONTEXT_MEMORY_SHARE)
    full = estimate_memory(record, trained, ranks)
    if full.total_bytes <= budget:
        return ContextChoice(
            trained,
            f"the model's maximum: ~{format_gib(full.total_bytes)} GiB of "
            f"{format_gib(available)} GiB available",
        )
    fitting = _largest_fitting_context(record, budget, ranks)
    return ContextChoice(
        max(fitting, min(DEFAULT_CONTEXT_LENGTH, trained)),
        f"the model's maximum {trained} would need ~{format_gib(full.total_bytes)} GiB, "
        f"{format_gib(available)} GiB available: the largest context that fits",
    )


def _largest_fitting_context(record: ModelRecord, budget: int, ranks: int) -> int:
    """The estimate grows by the same KV bytes with every token of context."""
    base = estimate_memory(record, 0, ranks).total_bytes
    per_token = estimate_memory(record, 1, ranks).total_bytes - base
    if per_token <= 0 or budget <= base:
        return 0
    return (budget - base) // per_token // CONTEXT_STEP * CONTEXT_STEP


def size_for_load(
    record: ModelRecord, requested: int | None, in_use: int, freed: int, ranks: int = 1
):
    """The context a model loads with, its memory estimate and the memory it may use, once
    models taking `freed` of the `in_use` bytes are unloaded (reads files: off the loop)."""
    available = available_memory_bytes(in_use)
    if available is not None and memory_limit_bytes() is None:
        available += freed  # the system figure does not yet count what unloading frees
    choice = choose_context_length(record, requested, available, ranks)
    return choice, estimate_memory(record, choice.length, ranks), available


def automatic_context_length(record: ModelRecord) -> int:
    """The context a model loads with when nothing asks for one, on this machine now."""
    return choose_context_length(record, None, available_memory_bytes()).length


# llama.cpp allocates the KV cache of every slot at start (mlxserve starts it with 4); MLX grows
# its cache with the tokens each sequence really holds, so one full context is counted for it.
LLAMACPP_SLOTS = 4
DEFAULT_MLX_BATCH = 8  # when the free memory cannot be told, so no KV budget bounds the batch
# A decode step's time grows with its rows: past this many, each stream's tokens would come too
# slowly to read as they arrive, so further requests wait instead.
MAX_MLX_BATCH = 64


def estimate_memory(record: ModelRecord, context: int, ranks: int = 1) -> MemoryEstimate:
    """What one process holds: a distributed server (`serve --distributed`) splits each MLX
    language model across `ranks` processes, each with about its share of weights and KV."""
    sequences = LLAMACPP_SLOTS if record.format == "gguf" else 1
    if record.format != "mlx" or record.type != "llm":
        ranks = 1
    weights = record.size_bytes // ranks
    shape = attention_shape(record)
    kv_cache = 0
    if shape is not None and record.type not in ("embeddings", "rerank"):
        element_bytes = kv_element_bytes(record)
        per_token = shape.layers * shape.kv_heads * shape.head_dim * 2 * element_bytes
        kv_cache = int(per_token * context * sequences) // ranks
    overhead = FIXED_OVERHEAD_BYTES + int(weights * WEIGHTS_OVERHEAD_RATIO)
    return MemoryEstimate(weights, kv_cache, overhead, context)


def mlx_kv_budget_tokens(
    record: ModelRecord,
    context_length: int,
    available: int | None,
    prompt_cache_bytes: int,
    ranks: int = 1,
) -> int | None:
    """KV tokens the MLX engine's batch may hold together: one full context (counted in the
    model's estimate) plus as many as half the memory left after that estimate and the prompt
    cache holds. The other half stays free for activations and the rest of the machine. None
    when the free memory cannot be told."""
    estimate = estimate_memory(record, context_length, ranks)
    per_token = estimate_memory(record, 1, ranks).kv_cache_bytes
    if available is None or per_token == 0:
        return None
    spare = max(available - estimate.total_bytes - prompt_cache_bytes, 0) // 2
    return context_length + spare // per_token


def kv_element_bytes(record: ModelRecord) -> float:
    """Bytes per cached key or value element, the scales of a quantized cache included."""
    # llama.cpp keeps an f16 cache; MLX caches in the weights' compute dtype (f32 when unquantized).
    if record.format == "gguf":
        return LLAMACPP_BLOCK_BYTES[record.kv_bits] if record.kv_bits else 2
    full = 4 if record.quantization.lower() in ("none", "f32", "float32", "") else 2
    quantization = kv_quantization(record.kv_bits, record.kv_group_size)
    return quantization.mlx_element_bytes(full) if quantization else full


def attention_shape(record: ModelRecord) -> AttentionShape | None:
    """Layers, KV heads and head size from config.json (MLX) or the GGUF header; None if unknown."""
    try:
        if record.format == "gguf":
            return _gguf_attention_shape(record.directory / record.gguf_file)
        return _config_attention_shape(record.directory / "config.json")
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return None


def _config_attention_shape(path: Path) -> AttentionShape:
    config = json.loads(path.read_text())
    config = config.get("text_config", config)
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return AttentionShape(
        layers=int(config["num_hidden_layers"]),
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
    )


def _gguf_attention_shape(path: Path) -> AttentionShape:
    fields = read_scalar_fields(path)
    arch = fields["general.architecture"]
    heads = int(fields[f"{arch}.attention.head_count"])
    head_dim = fields.get(f"{arch}.attention.key_length") or (
        int(fields[f"{arch}.embedding_length"]) // heads
    )
    return AttentionShape(
        layers=int(fields[f"{arch}.block_count"]),
        kv_heads=int(fields.get(f"{arch}.attention.head_count_kv") or heads),
        head_dim=int(head_dim),
    )


def memory_limit_bytes() -> int | None:
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{MEMORY_LIMIT_ENV} must be a number of bytes, got {value!r}") from exc


def available_memory_bytes(loaded_bytes: int = 0) -> int | None:
    """Memory a new model may use: the configured limit minus what loaded models take, else what
    the system reports as available; None when it cannot be told."""
    limit = memory_limit_bytes()
    if limit is not None:
        return max(limit - loaded_bytes, 0)
    try:
        # Linux's MemAvailable; macOS's free and inactive pages, which it hands out unswapped.
        return psutil.virtual_memory().available
    except (OSError, RuntimeError):
        return None


def format_gib(size: int) -> str:
    return f"{size / GIB:.2f}"
