"""RoPE settings from GGUF metadata, in the `rope_scaling` shape mlx-lm's `initialize_rope` reads.

llama.cpp's converter turns Llama 3's `rope_scaling` into a `rope_freqs` tensor of per-dimension
period multipliers; `llama3_scaling_from_factors` recovers parameters that reproduce it exactly.
"""

from __future__ import annotations

import math

import numpy as np

from mlxserve.models.convert.errors import ConversionError

DEFAULT_ORIGINAL_CONTEXT = 8192
FACTOR_TOLERANCE = 1e-3


def rope_scaling_from_metadata(metadata: dict, arch: str) -> dict | None:
    """`linear` and `yarn` scaling as GGUF records them (`<arch>.rope.scaling.*`)."""
    kind = metadata.get(f"{arch}.rope.scaling.type", "none")
    factor = metadata.get(f"{arch}.rope.scaling.factor")
    if kind == "none" or not factor or factor == 1.0:
        return None
    if kind == "linear":
        return {"type": "linear", "rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = metadata.get(f"{arch}.rope.scaling.original_context_length")
        scaling = {"type": "yarn", "rope_type": "yarn", "factor": float(factor)}
        if original:
            scaling["original_max_position_embeddings"] = int(original)
        return scaling
    raise ConversionError(f"unsupported RoPE scaling type {kind!r} in the GGUF metadata")


def llama3_factors(dims: int, base: float, scaling: dict) -> np.ndarray:
    """The per-dimension period multipliers Llama 3 scaling gives (llama.cpp's `rope_freqs`)."""
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelens = 2 * math.pi * base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    smooth = np.clip((original / wavelens - low) / (high - low), 0.0, 1.0)
    return 1.0 / ((1.0 - smooth) / factor + smooth)


def llama3_scaling_from_factors(
    factors: np.ndarray, dims: int, base: float, original: int | None = None
) -> dict | None:
    """Llama 3 `rope_scaling` whose factors equal `factors`, or None when they are all 1."""
    factors = np.asarray(factors, dtype=np.float64)
    if np.allclose(factors, 1.0, atol=FACTOR_TOLERANCE):
        return None
    wavelens = 2 * math.pi * base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    for scaling in _llama3_candidates(factors, wavelens, int(original or DEFAULT_ORIGINAL_CONTEXT)):
        if np.allclose(llama3_factors(dims, base, scaling), factors, rtol=FACTOR_TOLERANCE):
            return scaling
    raise ConversionError("the GGUF's rope_freqs tensor does not follow Llama 3 RoPE scaling")


def _llama3_candidates(factors: np.ndarray, wavelens: np.ndarray, original: int) -> list[dict]:
    """Parameter sets to try: any set with the same medium-band line gives the same factors."""
    factor = float(factors.max())
    medium = (factors > 1 + FACTOR_TOLERANCE) & (factors < factor - FACTOR_TOLERANCE)
    # smooth = original / (high - low) / wavelen - low / (high - low): a line in 1 / wavelen
    smooth = (1 / factors - 1 / factor) / (1 - 1 / factor)
    if medium.sum() >= 2:
        slope, intercept = np.polyfit(1 / wavelens[medium], smooth[medium], 1)
        span = original / slope
        return [_llama3(factor, -intercept * span, -intercept * span + span, original)]
    candidates = [_llama3(factor, 1.0, 4.0, original)]
    if medium.sum() == 1:  # with low 1 and high 4 the one medium point fixes the context length
        index = int(np.argmax(medium))
        candidates.append(_llama3(factor, 1.0, 4.0, wavelens[index] * (1 + 3 * smooth[index])))
    else:  # a sharp step: put the whole medium band between the two dimensions around it
        first_scaled = int(np.argmax(factors > 1 + FACTOR_TOLERANCE))
        if first_scaled > 0:
            candidates.append(
                _llama3(
                    factor,
                    1.0,
                    4.0,
                    math.sqrt(4 * wavelens[first_scaled - 1] * wavelens[first_scaled]),
                )
            )
    return candidates


def _llama3(factor: float, low: float, high: float, original: float) -> dict:
    original = round(float(original), 6)
    return {
        "type": "llama3",
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": round(float(low), 6),
        "high_freq_factor": round(float(high), 6),
        "original_max_position_embeddings": int(original) if original.is_integer() else original,
    }
