"""LoRA adapters served side by side on one loaded model, each batch row with its own.

An adapter is mlx-lm's folder (`adapter_config.json` and `adapters.safetensors`, as
`mlx_lm.lora` writes it): for some linear layers, low-rank matrices `lora_a` (in x rank) and
`lora_b` (rank x out) and a scale, so the layer computes `W x + scale * (x A) B`. The base
weights stay as loaded; each adapted layer is wrapped once and keeps every loaded adapter's
matrices stacked, slot 0 being no adapter. Before each forward pass the runner's model routes
the batch: every row takes the slot of its sequence's adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from mlxserve.engine.adapter_format import read_lora
from mlxserve.engine.base import EngineUnavailable

NO_ADAPTER = 0  # the slot of rows that use the base weights alone


class AdapterError(ValueError):
    """An adapter folder that does not fit the model, or names no adapter mlxserve serves."""


@dataclass
class BatchRouting:
    """Which adapter slot each row of the next forward pass uses, shared by the wrapped layers.
    `uniform` is that slot when every row uses the same one (no gather needed)."""

    slots: mx.array | None = None
    uniform: int = NO_ADAPTER


@dataclass
class LayerAdapters:
    """One layer's adapters, stacked by slot: rows gather their own matrices and scale."""

    lora_a: mx.array  # slots x in x rank
    lora_b: mx.array  # slots x rank x out
    scales: list[float]  # by slot
    present: set[int] = field(default_factory=set)  # the slots that adapt this layer

    def __post_init__(self):
        self.row_scales = mx.array(self.scales)  # gathered by the rows of a mixed batch


class MixedLoRALinear(nn.Module):
    """A linear layer with any number of LoRA adapters, applied per row as routed."""

    def __init__(self, linear: nn.Module, routing: BatchRouting):
        super().__init__()
        self.linear = linear
        # Plain objects, not arrays: they stay out of the model's parameter tree.
        self.routing = routing
        self.adapters: LayerAdapters | None = None

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear(x)
        adapters: LayerAdapters | None = self.adapters
        routing: BatchRouting = self.routing
        if adapters is None:
            return y
        if routing.slots is None:
            slot = routing.uniform
            if slot not in adapters.present:
                return y
            # One adapter for every row: the same arithmetic as mlx-lm's LoRALinear.
            z = (x @ adapters.lora_a[slot]) @ adapters.lora_b[slot]
            return y + (adapters.scales[slot] * z).astype(x.dtype)
        slots = routing.slots
        z = (x @ adapters.lora_a[slots]) @ adapters.lora_b[slots]
        scales = adapters.row_scales[slots].astype(z.dtype)
        return y + (scales[:, None, None] * z).astype(x.dtype)


@dataclass
class LoadedAdapter:
    name: str
    scale: float
    weights: dict[str, tuple[mx.array, mx.array]]  # by layer path: (lora_a, lora_b)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.weights.values())


class AdapterBank:
    """The adapters loaded into one model, on the runner thread that owns its arrays."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.routing = BatchRouting()
        self._adapters: list[LoadedAdapter] = []  # slot i + 1 holds adapter i
        self._layers: dict[str, MixedLoRALinear] = {}  # wrapped layers by path

    @property
    def names(self) -> list[str]:
        return [adapter.name for adapter in self._adapters]

    def nbytes_of(self, name: str) -> int:
        return sum(adapter.nbytes for adapter in self._adapters if adapter.name == name)

    def load(self, name: str, directory: Path) -> None:
        """Read an adapter folder and add it to the stacks; a name already loaded is kept."""
        if name in self.names:
            return
        adapter = read_adapter(name, directory)
        modules = dict(self.model.named_modules())
        adapter.weights = {
            self._wrap(path, modules): matrices for path, matrices in adapter.weights.items()
        }
        self._adapters.append(adapter)
        self._restack()

    def unload(self, name: str) -> bool:
        """Drop an adapter's matrices; False when it was not loaded."""
        kept = [adapter for adapter in self._adapters if adapter.name != name]
        if len(kept) == len(self._adapters):
            return False
        self._adapters = kept
        self._restack()
        return True

    def route(self, sequences: list) -> None:
        """Set each row's slot for the next forward pass, a row per sequence."""
        slots = [self._slot_of(sequence) for sequence in sequences]
        if len(set(slots)) <= 1:
            self.routing.slots, self.routing.uniform = None, slots[0] if slots else NO_ADAPTER
        else:
            self.routing.slots, self.routing.uniform = mx.array(slots), NO_ADAPTER

    def _slot_of(self, sequence) -> int:
        """A sequence whose adapter was unloaded under it ends alone; its row runs unadapted
        and is never sampled."""
        name = sequence.adapter
        if name is None:
            return NO_ADAPTER
        for index, adapter in enumerate(self._adapters):
            if adapter.name == name:
                return index + 1
        if not sequence.finished:
            sequence.fail(EngineUnavailable(f"adapter '{name}' was unloaded during the request"))
        return NO_ADAPTER

    def _wrap(self, path: str, modules: dict[str, nn.Module]) -> str:
        """Wrap the layer an adapter's path names (once); the layer's path in this model."""
        path = _module_path(path, modules)
        if path in self._layers:
            return path
        layer = modules.get(path)
        if not isinstance(layer, (nn.Linear, nn.QuantizedLinear)):
            found = type(layer).__name__ if layer is not None else "nothing"
            raise AdapterError(f"the adapter adapts '{path}', which is {found} in this model")
        wrapped = MixedLoRALinear(layer, self.routing)
        self.model.update_modules(tree_unflatten([(path, wrapped)]))
        self._layers[path] = wrapped
        return path

    def _restack(self) -> None:
        """Rebuild every wrapped layer's stacks from the loaded adapters (on load and unload)."""
        for path, layer in self._layers.items():
            present = {i + 1 for i, a in enumerate(self._adapters) if path in a.weights}
            if not present:
                layer.adapters = None
                continue
            layer.adapters = _stack(path, self._adapters, present)
        mx.eval([layer.adapters.lora_a for layer in self._layers.values() if layer.adapters])


def _module_path(path: str, modules: dict[str, nn.Module]) -> str:
    """A layer path as this model names it. Transformers' paths (a PEFT adapter's) and mlx-lm's
    can differ above the decoder layers (`model.language_model.layers.N` against
    `language_model.model.layers.N`), so a path missing here is matched from `layers.` down."""
    if path in modules or "layers." not in path:
        return path
    tail = path[path.index("layers.") :]
    matches = [name for name in modules if name == tail or name.endswith(f".{tail}")]
    return matches[0] if len(matches) == 1 else path


def _stack(path: str, adapters: list[LoadedAdapter], present: set[int]) -> LayerAdapters:
    """Slot 0 and adapters that leave this layer alone get zeros; ranks are padded to the
    largest with zeros, which add nothing."""
    shapes = [a.weights[path] for a in adapters if path in a.weights]
    rank = max(lora_a.shape[1] for lora_a, _ in shapes)
    in_dims, out_dims = shapes[0][0].shape[0], shapes[0][1].shape[1]
    dtype = shapes[0][0].dtype
    stack_a, stack_b = [mx.zeros((in_dims, rank), dtype)], [mx.zeros((rank, out_dims), dtype)]
    for adapter in adapters:
        lora_a, lora_b = adapter.weights.get(path, (None, None))
        if lora_a is None:
            stack_a.append(mx.zeros((in_dims, rank), dtype))
            stack_b.append(mx.zeros((rank, out_dims), dtype))
            continue
        pad = rank - lora_a.shape[1]
        stack_a.append(mx.pad(lora_a, [(0, 0), (0, pad)]) if pad else lora_a)
        stack_b.append(mx.pad(lora_b, [(0, pad), (0, 0)]) if pad else lora_b)
    scales = [0.0] + [adapter.scale for adapter in adapters]
    return LayerAdapters(mx.stack(stack_a), mx.stack(stack_b), scales, present)


def read_adapter(name: str, directory: Path) -> LoadedAdapter:
    """An adapter folder's matrices by layer path, checked to be plain LoRA."""
    try:
        scale, weights = read_lora(directory)
    except ValueError as exc:
        raise AdapterError(f"adapter '{name}': {exc}") from exc
    return LoadedAdapter(name, scale, weights)
