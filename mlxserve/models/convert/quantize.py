"""The `quantize` option: keep float32, cast to bf16/f16, or MLX affine 4/8-bit quantization."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.target import TargetModel

QUANTIZE_CHOICES = ("4", "8", "bf16", "f16", "none")
GROUP_SIZES = (32, 64, 128)
CHUNK_BYTES = 32 << 20


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
        """The stored tensors for one weight (a numpy or MLX array): itself, cast, or its packed
        weight, scales and biases."""
        import mlx.core as mx

        if not _is_float(values):
            return {name: _as_mlx(values)}
        source_dtype = _dtype_of(values)
        dtype = self.float_dtype(source_dtype)
        params = target.quantization_for(name, self.group_size) if self.mode == "affine" else False
        if not params:
            if source_dtype == dtype:  # nothing to cast: no chunked copy either
                return {name: _as_mlx(values)}
            return {name: in_row_chunks(values, lambda rows: (rows.astype(dtype),))[0]}
        stem = name.removesuffix(".weight")
        if isinstance(params, dict):
            self.layer_overrides[stem] = params
        else:
            params = {}
        group_size = params.get("group_size", self.group_size)
        bits = params.get("bits", self.bits)
        packed, scales, biases = in_row_chunks(
            values,
            lambda rows: mx.quantize(rows.astype(dtype), group_size=group_size, bits=bits),
        )
        return {name: packed, f"{stem}.scales": scales, f"{stem}.biases": biases}


def _as_mlx(values):
    import mlx.core as mx

    return mx.array(values) if isinstance(values, np.ndarray) else values


def _dtype_of(values):
    import mlx.core as mx

    if isinstance(values, np.ndarray):
        return mx.array(np.zeros(0, values.dtype)).dtype
    return values.dtype


def _is_float(values) -> bool:
    import mlx.core as mx

    if isinstance(values, np.ndarray):
        return np.issubdtype(values.dtype, np.floating)
    return mx.issubdtype(values.dtype, mx.floating)


def in_row_chunks(values, transform) -> list:
    """`transform` (MLX rows -> tuple of arrays) applied to ~32 MB row blocks, results joined:
    casting or quantizing a 262k-row embedding at once would hold several float copies."""
    import mlx.core as mx

    if values.ndim < 2:
        return list(transform(mx.array(values)))
    step = max(1, CHUNK_BYTES // (4 * values.shape[-1]))
    parts = []
    for start in range(0, values.shape[0], step):
        outputs = transform(mx.array(values[start : start + step]))
        mx.eval(outputs)
        parts.append(outputs)
    if len(parts) == 1:
        return list(parts[0])
    return [mx.concatenate(pieces, axis=0) for pieces in zip(*parts, strict=True)]


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
