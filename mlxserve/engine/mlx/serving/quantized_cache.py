"""Quantized KV caches that batch: the runner's prompt, batch and prompt-cache layers when a
model loads with `kv_bits`, so a quantized cache decodes with continuous batching as a full one.

Keys and values are kept as mx.quantize's (packed, scales, biases) triples; attention reads them
through mlx-lm's quantized path (it looks for the layer's `bits`). Only layers whose KV grows with
the context are quantized: a sliding-window layer's size is bounded by its window, so it stays at
full precision (mlx-lm has no quantized rotating cache).
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache, QuantizedKVCache, _BaseCache

from mlxserve.engine.kv_quantization import KVQuantization


class QuantizedPromptCache(QuantizedKVCache):
    """One sequence's quantized layer, which the runner can merge into a batch and trim."""

    def size(self) -> int:
        return self.offset

    @classmethod
    def merge(cls, caches: list[QuantizedPromptCache]) -> BatchQuantizedKVCache:
        return BatchQuantizedKVCache.merge(caches)

    def fill(self, keys: tuple, values: tuple) -> None:
        """Start an empty layer from stored quantized keys and values (the disk cache's)."""
        self.keys, self.values, self.offset = keys, values, keys[0].shape[2]


class BatchQuantizedKVCache(_BaseCache):
    """BatchKVCache's left-padded rows, each position's keys and values quantized."""

    step = 256

    def __init__(self, left_padding: list[int], group_size: int, bits: int):
        self.keys: tuple | None = None
        self.values: tuple | None = None
        self.left_padding = mx.array(left_padding)
        self.offset = mx.array([-pad for pad in left_padding])
        self._idx = 0
        self.group_size, self.bits = group_size, bits

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        start, count = self._idx, keys.shape[2]
        if self.keys is None or start + count > self.keys[0].shape[2]:
            self._grow(keys, values)
        self.offset = self.offset + count
        self._idx += count
        for stored, new in (
            (self.keys, self._quantize(keys)),
            (self.values, self._quantize(values)),
        ):
            for part, new_part in zip(stored, new, strict=True):
                part[..., start : self._idx, :] = new_part
        return self.keys_and_values()

    def _quantize(self, array: mx.array) -> tuple:
        return tuple(mx.quantize(array, group_size=self.group_size, bits=self.bits))

    def _grow(self, keys: mx.array, values: mx.array) -> None:
        """Room for `step`-sized runs of positions more, as BatchKVCache grows."""
        batch, heads, count, _ = keys.shape
        room = (self.step + count - 1) // self.step * self.step

        def empty(like: mx.array) -> tuple:
            return self._quantize(mx.zeros((batch, heads, room, like.shape[3]), like.dtype))

        if self.keys is None:
            self.keys, self.values = empty(keys), empty(values)
            return
        used = self._idx

        def extended(stored: tuple, room_added: tuple) -> tuple:
            return tuple(
                mx.concatenate([part[..., :used, :], more], axis=2)
                for part, more in zip(stored, room_added, strict=True)
            )

        self.keys, self.values = (
            extended(self.keys, empty(keys)),
            extended(self.values, empty(values)),
        )

    def keys_and_values(self):
        return tree_map(lambda part: part[..., : self._idx, :], (self.keys, self.values))

    @property
    def state(self):
        return self.keys, self.values, self.offset, self.left_padding, self._idx

    @state.setter
    def state(self, value):
        self.keys, self.values, self.offset, self.left_padding, self._idx = value

    def is_trimmable(self) -> bool:
        return True

    def trim(self, count: int) -> int:
        count = min(self._idx, count)
        self._idx -= count
        self.offset = self.offset - count
        return count

    def make_mask(self, length: int, return_array: bool = False, **kwargs):
        return create_causal_mask(
            length, offset=self._idx, left_padding=self.left_padding, **kwargs
        )

    def filter(self, batch_indices: mx.array) -> None:
        """Keep the given rows; padding every row shares is cut off."""
        if self.keys is not None:
            self.keys, self.values = tree_map(
                lambda part: part[batch_indices], (self.keys, self.values)
            )
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shared = min(self.left_padding.tolist())
        if shared > 0:
            if self.keys is not None:
                self.keys, self.values = tree_map(
                    lambda part: part[..., shared:, :], (self.keys, self.values)
                )
            self._idx -= shared
            self.left_padding = self.left_padding - shared

    def extend(self, other: BatchQuantizedKVCache) -> None:
        """Append `other`'s rows, both right-aligned at the longer one's position."""
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        end = max(self._idx, other._idx)
        template = self.keys_and_values() if self.keys is not None else other.keys_and_values()
        mine, theirs = (cache._aligned(end, template) for cache in (self, other))
        self.keys, self.values = tree_map(lambda a, b: mx.concatenate([a, b]), mine, theirs)
        self.offset = mx.concatenate([self.offset, other.offset])
        self.left_padding = mx.concatenate(
            [self.left_padding + end - self._idx, other.left_padding + end - other._idx]
        )
        self._idx = end

    def _aligned(self, end: int, template) -> tuple:
        """This cache's keys and values, padded on the left to `end` positions."""
        rows = self.offset.shape[0]
        if self.keys is None:
            return tree_map(
                lambda part: mx.zeros((rows, part.shape[1], end, part.shape[3]), part.dtype),
                template,
            )
        pad = [(0, 0), (0, 0), (end - self._idx, 0), (0, 0)]
        return tree_map(lambda part: mx.pad(part, pad), self.keys_and_values())

    def extract(self, row: int) -> QuantizedPromptCache:
        """One row as a cache of its own, its padding dropped (for the prompt cache)."""
        padding = self.left_padding.tolist()[row]
        cache = QuantizedPromptCache(self.group_size, self.bits)
        cache.keys, cache.values = tree_map(
            lambda part: mx.contiguous(part[row : row + 1, :, padding : self._idx]),
            (self.keys, self.values),
        )
        cache.offset = self._idx - padding
        return cache

    @classmethod
    def merge(cls, caches: list[QuantizedPromptCache]) -> BatchQuantizedKVCache:
        """Single sequences' layers as one batch, each left-padded to the longest."""
        first = caches[0]
        longest = max(cache.offset for cache in caches)
        merged = cls([longest - cache.offset for cache in caches], first.group_size, first.bits)
        filled = [cache for cache in caches if cache.keys is not None]
        if not filled:
            return merged
        rows = []
        for cache in caches:
            single = cls([longest - cache.offset], first.group_size, first.bits)
            if cache.keys is not None:
                single.keys, single.values = cache.keys_and_values()
                single._idx = cache.offset
            rows.append(single._aligned(longest, filled[0].keys_and_values()))
        merged.keys, merged.values = tree_map(lambda *parts: mx.concatenate(parts), *rows)
        merged.offset = merged.offset + longest
        merged._idx = longest
        return merged

    def size(self) -> int:
        return self._idx

    def empty(self) -> bool:
        return self.keys is None

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return sum(part.nbytes for part in (*self.keys, *self.values))


def quantize_layers(cache: list, quantization: KVQuantization) -> list:
    """A model's fresh cache with every full-context layer made quantized."""
    return [
        QuantizedPromptCache(quantization.group_size, quantization.bits)
        if type(layer) is KVCache
        else layer
        for layer in cache
    ]
