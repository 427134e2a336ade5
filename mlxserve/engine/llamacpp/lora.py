"""LoRA adapters on the llama.cpp engine. llama-server reads GGUF LoRA files when it starts and
applies them per request (`"lora": [{"id": i, "scale": s}]`), with every scale 0 otherwise
(`--lora-init-without-apply`). An adapter in the store (mlx-lm's or PEFT's folder) is written
once as such a file beside itself, its tensors named as the base GGUF names its layers."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np

from mlxserve.engine.adapter_format import read_lora, weights_file
from mlxserve.engine.base import Unsupported
from mlxserve.gguf_header import read_header

log = logging.getLogger("mlxserve.llamacpp")
GGUF_ADAPTER = "adapter.gguf"  # written beside the adapter's own files


@dataclass(frozen=True)
class GGUFAdapter:
    name: str
    path: Path

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size


@dataclass
class ChildAdapters:
    """The adapters a model's child starts with (its `--lora` files, by index), and why each of
    the others stored beside the model cannot be served."""

    usable: list[GGUFAdapter] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # by name

    def server_args(self) -> tuple[str, ...]:
        files = [arg for adapter in self.usable for arg in ("--lora", str(adapter.path))]
        return (*files, "--lora-init-without-apply") if files else ()

    def served(self, name: str, model_id: str) -> GGUFAdapter:
        for adapter in self.usable:
            if adapter.name == name:
                return adapter
        why = self.refused.get(name) or (
            f"it was stored after '{model_id}' was loaded; unload the model and load it again "
            "to serve it"
        )
        raise Unsupported(f"adapter '{name}' is not served here: {why}", param="model")

    def request_field(self, name: str | None) -> list[dict]:
        """A completion body's `lora`: the named adapter at full scale, every other at none.
        Sent with every request, the base model's too: a request without it gets the scales
        the child started with."""
        return [
            {"id": index, "scale": 1.0 if adapter.name == name else 0.0}
            for index, adapter in enumerate(self.usable)
        ]


def child_adapters(folders: list[Path], base_gguf: Path) -> ChildAdapters:
    """The adapters the base model's child starts with: one that does not fit is refused by
    name and must not keep the base from loading."""
    adapters = ChildAdapters()
    for folder in folders:
        try:
            adapters.usable.append(GGUFAdapter(folder.name, gguf_adapter(folder, base_gguf)))
        except (ValueError, OSError, RuntimeError, struct.error) as exc:  # unreadable too
            log.warning("adapter %s is left out: %s", folder.name, exc)
            adapters.refused[folder.name] = str(exc)
    return adapters


def gguf_adapter(folder: Path, base_gguf: Path) -> Path:
    """The adapter as a GGUF LoRA file for this base, written on first use (and again when the
    adapter's weights are newer)."""
    target = folder / GGUF_ADAPTER
    source = weights_file(folder)
    if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return target
    fields, shapes = read_header(base_gguf)
    architecture = fields["general.architecture"]
    scale, matrices = read_lora(folder)
    names = _tensor_names(architecture, shapes)
    tensors = {}  # every layer checked before anything is written
    for path, (lora_a, lora_b) in matrices.items():
        name = _gguf_name(names, path, shapes, lora_a.shape[0], lora_b.shape[1])
        # ggml's shapes run innermost first: numpy holds A as (rank x in), B as (out x rank).
        tensors[f"{name}.lora_a"] = _float32(lora_a.T)
        tensors[f"{name}.lora_b"] = _as_converted(
            _float32(lora_b.T * scale), name, architecture, fields
        )
    staging = target.with_name(f".{GGUF_ADAPTER}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(staging), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    # Alpha 0 makes llama.cpp apply B A at the request's scale: the adapter's own scale is folded
    # into B, which also holds where ranks differ from layer to layer.
    writer.add_float32("adapter.lora.alpha", 0.0)
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(staging, target)
    return target


def _tensor_names(architecture: str, shapes: dict) -> gguf.TensorNameMap:
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture), None)
    if arch is None:
        raise ValueError(f"the GGUF architecture '{architecture}' is unknown to gguf")
    blocks = 1 + max((int(n.split(".")[1]) for n in shapes if n.startswith("blk.")), default=0)
    return gguf.get_tensor_name_map(arch, blocks)


def _gguf_name(names, path: str, shapes: dict, in_dims: int, out_dims: int) -> str:
    """The base GGUF's weight that a layer path adapts, checked to have the adapter's shape.
    Paths are matched from `layers.N` down, whatever the model's path above them."""
    if "layers." not in path:
        raise ValueError(f"'{path}' is not a decoder layer's")
    name = names.get_name("model." + path[path.index("layers.") :])
    weight = f"{name}.weight"
    if name is None or weight not in shapes:
        raise ValueError(f"'{path}' has no weight in this GGUF model")
    if shapes[weight][:2] != (in_dims, out_dims):
        raise ValueError(
            f"'{path}' is {in_dims} x {out_dims} in the adapter, {shapes[weight][0]} x "
            f"{shapes[weight][1]} in the model: it was trained on another model"
        )
    return weight


def _as_converted(lora_b: np.ndarray, name: str, architecture: str, fields: dict) -> np.ndarray:
    """llama.cpp's converter reorders the rows of LLaMA-architecture query and key weights for
    its rotary embedding; B's rows (the same outputs) are reordered alike."""
    if architecture != "llama" or not name.endswith(("attn_q.weight", "attn_k.weight")):
        return lora_b
    heads = int(fields["llama.attention.head_count"])
    kv_heads = fields.get("llama.attention.head_count_kv")
    if name.endswith("attn_k.weight") and kv_heads is not None:
        heads = int(kv_heads)
    out_dims = lora_b.shape[0]
    paired = lora_b.reshape(heads, 2, out_dims // heads // 2, *lora_b.shape[1:])
    return np.ascontiguousarray(paired.swapaxes(1, 2).reshape(lora_b.shape))


def _float32(matrix: mx.array) -> np.ndarray:
    return np.ascontiguousarray(np.array(matrix.astype(mx.float32)))
