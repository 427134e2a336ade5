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

from mlxserve.engine.mlx.adapters import AdapterBank
from mlxserve.engine.mlx.serving.sequence import Sequence


class TextModel:
    """An mlx-lm model as the runner drives it: prefill over prompt positions, batched decode."""

    def __init__(self, model):
        self.model = model
        self.adapters: AdapterBank | None = None  # LoRA adapters, once one is loaded

    def _route(self, sequences: list[Sequence]) -> None:
        """Each row's adapter for the next pass (none for a draft model's own passes)."""
        if self.adapters is not None:
            self.adapters.route(sequences)

    def make_cache(self) -> list:
        return make_prompt_cache(self.model)

    def prefill(self, sequence: Sequence, start: int, end: int, cache: list) -> mx.array:
        self._route([sequence])
        return self.model(mx.array([sequence.prompt_tokens[start:end]]), cache=cache)

    def decode(self, inputs: mx.array, cache: list, sequences: list[Sequence]) -> mx.array:
        self._route(sequences)
        return self.model(inputs, cache=cache)

    @property
    def per_token_cache(self) -> bool:
        """Every layer keeps one key and value per token (no recurrent state), so prompts can
        be read together in one padded batch and their state stored in blocks."""
        return all(type(layer) in (KVCache, RotatingKVCache) for layer in self.make_cache())

    def make_batch_cache(self, left_padding: list[int]) -> list:
        """An empty cache for prompts read together, each row left-padded to the longest."""
        return [
            BatchRotatingKVCache(layer.max_size, left_padding)
            if isinstance(layer, RotatingKVCache)
            else BatchKVCache(left_padding)
            for layer in self.make_cache()
        ]


def logits_as_numpy(logits: mx.array) -> np.ndarray:
    """Float32 logits as a NumPy view: the C sampler reads the buffer without another copy."""
    if logits.dtype != mx.float32:
        logits = logits.astype(mx.float32)
    return np.asarray(logits)
