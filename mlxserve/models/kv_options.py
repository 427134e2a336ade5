"""Which KV cache a model loads with: the load's own `kv_bits`, else its mlxserve.json's, else
the server's `--kv-bits`; refused with the reason when the engine cannot quantize it."""

from __future__ import annotations

import dataclasses
import logging

from mlxserve.engine.kv_quantization import check_kv_options
from mlxserve.models import memory
from mlxserve.models.loaded import RegistryError
from mlxserve.models.options import RegistryOptions
from mlxserve.models.store import ModelRecord

log = logging.getLogger(__name__)


def with_kv_options(
    record: ModelRecord, bits: int | None, group_size: int | None, options: RegistryOptions
) -> ModelRecord:
    """The record as it loads, its KV settings decided (an embedding model keeps no KV)."""
    if record.type == "embeddings":
        return dataclasses.replace(record, kv_bits=None, kv_group_size=None)
    bits = bits or record.kv_bits or options.kv_bits
    group_size = group_size or record.kv_group_size or options.kv_group_size
    try:
        check_kv_options(bits, group_size)
    except ValueError as exc:
        raise RegistryError(422, str(exc), "invalid_kv_options", param="kv_bits") from exc
    if bits and options.distributed:
        raise RegistryError(
            400,
            "a distributed server keeps a full-precision KV cache; load without kv_bits",
            "kv_bits_unsupported",
            param="kv_bits",
        )
    if bits and record.format == "mlx" and record.type == "vlm":
        log.warning("%s: a vision model keeps a full-precision KV cache", record.id)
        bits = None
    if bits and record.format == "mlx":
        _check_head_size(record, group_size)
    return dataclasses.replace(
        record, kv_bits=bits, kv_group_size=group_size if bits else record.kv_group_size
    )


def _check_head_size(record: ModelRecord, group_size: int) -> None:
    """MLX quantizes each head's keys in groups: the head size must hold whole groups."""
    shape = memory.attention_shape(record)
    if shape is not None and shape.head_dim % group_size:
        raise RegistryError(
            400,
            f"model '{record.id}' has {shape.head_dim}-element attention heads, which groups of "
            f"{group_size} do not divide; choose a kv_group_size of 32, 64 or 128 that does",
            "kv_bits_unsupported",
            param="kv_group_size",
        )
