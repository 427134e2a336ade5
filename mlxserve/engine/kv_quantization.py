"""Quantized KV cache settings shared by both engines: bits per element and the group size.

MLX stores each group of `group_size` keys or values as `bits`-bit integers with a scale and a
bias in the model's dtype; llama.cpp's cache types q8_0 and q4_0 store 32-element blocks with one
f16 scale (34 and 18 bytes a block).
"""

from __future__ import annotations

from dataclasses import dataclass

KV_BITS = (4, 8)
KV_GROUP_SIZES = (32, 64, 128)  # those mx.quantize accepts
DEFAULT_KV_GROUP_SIZE = 64
LLAMACPP_CACHE_TYPES = {8: "q8_0", 4: "q4_0"}
LLAMACPP_BLOCK_BYTES = {8: 34 / 32, 4: 18 / 32}  # bytes per element, its scale included


@dataclass(frozen=True)
class KVQuantization:
    bits: int
    group_size: int = DEFAULT_KV_GROUP_SIZE

    def __post_init__(self):
        check_kv_options(self.bits, self.group_size)

    def mlx_element_bytes(self, full_element_bytes: int) -> float:
        """Bytes per key or value element: the packed bits plus the group's scale and bias."""
        return self.bits / 8 + 2 * full_element_bytes / self.group_size


def check_kv_options(bits: int | None, group_size: int | None) -> None:
    """Refuse a setting the engines cannot run, naming the option and its legal values."""
    if bits is not None and bits not in KV_BITS:
        raise ValueError(f"`kv_bits` must be one of {KV_BITS}, got {bits}")
    if group_size is not None and group_size not in KV_GROUP_SIZES:
        raise ValueError(f"`kv_group_size` must be one of {KV_GROUP_SIZES}, got {group_size}")


def kv_quantization(bits: int | None, group_size: int | None) -> KVQuantization | None:
    """The setting for `bits` (None: a full-precision cache)."""
    if bits is None:
        check_kv_options(None, group_size)
        return None
    return KVQuantization(bits, group_size or DEFAULT_KV_GROUP_SIZE)


def llamacpp_cache_args(bits: int) -> tuple[str, ...]:
    """llama-server's options for a quantized cache; a quantized V cache needs flash attention."""
    cache_type = LLAMACPP_CACHE_TYPES[bits]
    return ("-ctk", cache_type, "-ctv", cache_type, "-fa", "on")
