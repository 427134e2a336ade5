"""The `quantize` option: keep float32, cast to bf16/f16, or MLX affine 4/8-bit quantization."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.target import TargetModel

QUANTIZE_CHOICES = ("4", "8", "bf16", "f16", "none")
GROUP_SIZES = (32, 64, 128)


@dataclass
class QuantSpec:
    """How every weight is stored. Quantized models keep bf16 for the layers left unquantized."""

    mode: str  # "none" | "bf16" | "f16" | "affine"
    bits: int = 0
    group_size: int = 64
    layer_overrides: dict[str, dict] = field(default_factory=dict)  # from a model's quant_predicate

    @property
    def label(self) -> str:
        """The manifest's quantization string."""
        return {"affine": f"{self.bits}bit", "none": "f32"}.get(self.mode, self.mode)

    def config_entry(self) -> dict | None:
        if self.mode != "affine":
            return None
        return {
            "group_size": self.group_size,
            "bits": self.bits,
            "mode": "affine",
            **self.layer_overrides,
        }

    def float_dtype(self, source_dtype=None):
        import mlx.core as mx

        if self.mode == "f16":
            return mx.float16
        if self.mode in ("bf16", "affine"):
            return mx.bfloat16
        return source_dtype or mx.float32

    def apply(self, name: str, values, target: TargetModel) -> dict:
        """The stored tensors for one weight: itself, or its packed weight, scales and biases."""
        import mlx.core as mx

        if isinstance(values, np.ndarray):
            values = mx.array(values)
        if not mx.issubdtype(values.dtype, mx.floating):
            return {name: values}
        values = values.astype(self.float_dtype(values.dtype))
        params = target.quantization_for(name, self.group_size) if self.mode == "affine" else False
        if not params:
            return {name: values}
        stem = name.removesuffix(".weight")
        if isinstance(params, dict):
            self.layer_overrides[stem] = params
        else:
            params = {}
        group_size = params.get("group_size", self.group_size)
        bits = params.get("bits", self.bits)
        packed, scales, biases = mx.quantize(values, group_size=group_size, bits=bits)
        return {name: packed, f"{stem}.scales": scales, f"{stem}.biases": biases}


def parse_quantize(quantize: str, group_size: int) -> QuantSpec:
    value = str(quantize).strip().lower().removesuffix("bit")
    if value not in QUANTIZE_CHOICES:
        raise ConversionError(
            f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}"
        )
    if value in ("4", "8"):
        if group_size not in GROUP_SIZES:
            raise ConversionError(f"group_size must be one of 32, 64, 128, got {group_size}")
        return QuantSpec("affine", int(value), group_size)
    return QuantSpec(value)
