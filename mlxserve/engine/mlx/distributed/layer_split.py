"""A pipeline split for decoder models that mlx-lm cannot pipeline (Gemma 3, Llama...): each
rank keeps a contiguous range of layers and a share of the vocabulary's rows.

The model's own forward pass runs unchanged on every rank. A layer outside the rank's range
does no work: it only moves its cache's position (a cache with no heads, so masks and positions
stay right and it holds no memory). The first layer of a range receives the hidden states from
the rank before; the last sends them on; the model's last layer shares the last rank's output
with all. The embedding and the output layer are split by vocabulary rows: each rank looks up
its rows (all summed), and computes its rows' logits (all gathered). So with 2 ranks each
holds about half of every weight.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from mlxserve.engine.base import EngineError


def split_layers(model: nn.Module, group: mx.distributed.Group) -> None:
    """Keep this rank's part of a lazily loaded model; the rest is never read from disk."""
    decoder = getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, list) or not hasattr(decoder, "embed_tokens"):
        raise EngineError(
            f"{type(model).__module__} has no layers to split by range; serve it with "
            "--distributed tensor if mlx-lm can shard it"
        )
    rank, size = group.rank(), group.size()
    if len(layers) < size:
        raise EngineError(f"a model of {len(layers)} layers cannot be split over {size} ranks")
    start, end = layer_range(len(layers), rank, size)
    for index in range(len(layers)):
        if not start <= index < end:
            layers[index] = SkippedLayer(layers[index])
    if rank > 0:
        layers[start] = FromRank(layers[start], rank - 1, group)
    if rank < size - 1:
        layers[end - 1] = ToRank(layers[end - 1], rank + 1, group)
    layers[-1] = SharedOutput(layers[-1], group)
    decoder.embed_tokens = EmbeddingShard(decoder.embed_tokens, group)
    if "lm_head" in model:
        model.lm_head = HeadShard(model.lm_head, group)


def layer_range(layers: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, as even as can be, the first ranks taking one more."""
    base, extra = divmod(layers, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class SkippedLayer(nn.Module):
    """Another rank's layer: the hidden states pass through; its cache only keeps count. It
    keeps the layer's plain settings (a model may ask a layer whether it uses a sliding
    window), not its weights."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        for key, value in vars(layer).items():
            if not key.startswith("_") and isinstance(value, bool | int | float | str):
                setattr(self, key, value)

    def __call__(self, x: mx.array, mask=None, cache=None, **kwargs) -> mx.array:
        if cache is not None:
            empty = mx.zeros((x.shape[0], 0, x.shape[1], 1), dtype=x.dtype)
            cache.update_and_fetch(empty, empty)
        return x


class LayerWrapper(nn.Module):
    """A layer with something done before or after it; asked anything else, it answers as the
    layer does."""

    def __init__(self, layer: nn.Module, group: mx.distributed.Group):
        super().__init__()
        self.layer, self.group = layer, group

    def __getattr__(self, key: str):
        try:
            return super().__getattr__(key)
        except AttributeError:
            if "layer" not in self:  # still being built
                raise
            return getattr(self["layer"], key)


class FromRank(LayerWrapper):
    """The first layer of a range, reading the hidden states the rank before computed."""

    def __init__(self, layer: nn.Module, source: int, group: mx.distributed.Group):
        super().__init__(layer, group)
        self.source = source

    def __call__(self, x: mx.array, mask=None, cache=None, **kwargs) -> mx.array:
        x = mx.distributed.recv_like(x, self.source, group=self.group)
        return self.layer(x, mask, cache, **kwargs)


class ToRank(LayerWrapper):
    """The last layer of a range, sending its output on. Its cache depends on the send, so a
    prefill chunk that only fills caches still passes the hidden states along."""

    def __init__(self, layer: nn.Module, destination: int, group: mx.distributed.Group):
        super().__init__(layer, group)
        self.destination = destination

    def __call__(self, x: mx.array, mask=None, cache=None, **kwargs) -> mx.array:
        sent = mx.distributed.send(
            self.layer(x, mask, cache, **kwargs), self.destination, group=self.group
        )
        if cache is not None:
            cache.keys = mx.depends(cache.keys, sent)
        return sent


class SharedOutput(LayerWrapper):
    """The model's last layer: every rank continues from the last rank's output."""

    def __call__(self, x: mx.array, mask=None, cache=None, **kwargs) -> mx.array:
        out = self.layer(x, mask, cache, **kwargs)
        rows = out.shape[0]
        last = (self.group.size() - 1) * rows
        return mx.distributed.all_gather(out, group=self.group)[last : last + rows]


class VocabularyRows(nn.Module):
    """A module whose weights have a row per token (an embedding, an output layer), cut to
    this rank's rows."""

    def __init__(self, module: nn.Module, group: mx.distributed.Group):
        super().__init__()
        rows = module["weight"].shape[0]
        size = group.size()
        self.sizes = [
            layer_range(rows, rank, size)[1] - layer_range(rows, rank, size)[0]
            for rank in range(size)
        ]
        self.start, self.end = layer_range(rows, group.rank(), size)
        # A copy of the rows, so the whole matrix can be freed once read.
        module.update(
            tree_map(
                lambda a: mx.array(a[self.start : self.end]) if a.shape[0] == rows else a,
                module.parameters(),
            )
        )
        self.inner, self.group = module, group

    def gather_logits(self, partial: mx.array) -> mx.array:
        """Every rank's logits side by side. Gathered by all, as the ring backend only sends
        between neighbours; a share shorter than the longest is padded for the gather."""
        width = max(self.sizes)
        pad = [(0, 0)] * (partial.ndim - 1) + [(0, width - partial.shape[-1])]
        gathered = mx.distributed.all_gather(mx.pad(partial, pad), group=self.group)
        rows = partial.shape[0]
        parts = [
            gathered[r * rows : (r + 1) * rows, ..., :size] for r, size in enumerate(self.sizes)
        ]
        return mx.concatenate(parts, axis=-1)


class EmbeddingShard(VocabularyRows):
    def __call__(self, tokens: mx.array) -> mx.array:
        inside = (tokens >= self.start) & (tokens < self.end)
        local = mx.clip(tokens - self.start, 0, self.end - self.start - 1)
        looked_up = self.inner(local)
        summed = mx.distributed.all_sum(
            looked_up * inside[..., None].astype(looked_up.dtype), group=self.group
        )
        # Evaluated here, so every rank takes part in the sum before it waits on another rank.
        mx.eval(summed)
        return summed

    def as_linear(self, x: mx.array) -> mx.array:
        return self.gather_logits(self.inner.as_linear(x))


class HeadShard(VocabularyRows):
    def __call__(self, x: mx.array) -> mx.array:
        return self.gather_logits(self.inner(x))
