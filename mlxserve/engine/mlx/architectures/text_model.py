"""An mlx-lm language model as the runner drives it, and the logits it hands to the sampler."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import (
    BatchKVCache,
    BatchRotatingKVCache,
    KVCache,
    RotatingKVCache,
    make_prompt_cache,
)

from mlxserve.engine.kv_quantization import KVQuantization
from mlxserve.engine.mlx.adapters import AdapterBank
from mlxserve.engine.mlx.serving.quantized_cache import (
    BatchQuantizedKVCache,
    QuantizedPromptCache,
    quantize_layers,
)
from mlxserve.engine.mlx.serving.sequence import Sequence


class TextModel:
    """An mlx-lm model as the runner drives it: prefill over prompt positions, batched decode."""

    def __init__(self, model, kv_quantization: KVQuantization | None = None):
        self.model = model
        self.kv_quantization = kv_quantization  # None: keys and values at full precision
        self.adapters: AdapterBank | None = None  # LoRA adapters, once one is loaded

    def route(self, sequences: list[Sequence]) -> None:
        """Each row's adapter for the next pass (none for a draft model's own passes); with no
        sequences, none for every row: a pass of the base model's own (scoring, rerank)."""
        if self.adapters is not None:
            self.adapters.route(sequences)

    def make_cache(self) -> list:
        cache = make_prompt_cache(self.model)
        if self.kv_quantization is None:
            return cache
        return quantize_layers(cache, self.kv_quantization)

    def prefill(self, sequence: Sequence, start: int, end: int, cache: list) -> mx.array:
        self.route([sequence])
        return self.model(mx.array([sequence.prompt_tokens[start:end]]), cache=cache)

    def decode(self, inputs: mx.array, cache: list, sequences: list[Sequence]) -> mx.array:
        self.route(sequences)
        return self.model(inputs, cache=cache)

    @property
    def per_token_cache(self) -> bool:
        """Every layer keeps one key and value per token (no recurrent state), so prompts can
        be read together in one padded batch and their state stored in blocks."""
        per_token = (KVCache, RotatingKVCache, QuantizedPromptCache)
        return all(type(layer) in per_token for layer in self.make_cache())

    def make_batch_cache(self, left_padding: list[int]) -> list:
        """An empty cache for prompts read together, each row left-padded to the longest."""
        return [self._batch_layer(layer, left_padding) for layer in self.make_cache()]

    @staticmethod
    def _batch_layer(layer, left_padding: list[int]):
        if isinstance(layer, RotatingKVCache):
            return BatchRotatingKVCache(layer.max_size, left_padding)
        if isinstance(layer, QuantizedPromptCache):
            return BatchQuantizedKVCache(left_padding, layer.group_size, layer.bits)
        return BatchKVCache(left_padding)


def logits_as_numpy(logits: mx.array) -> np.ndarray:
    """Float32 logits as a NumPy view: the C sampler reads the buffer without another copy."""
    if logits.dtype != mx.float32:
        logits = logits.astype(mx.float32)
    return np.asarray(logits)
