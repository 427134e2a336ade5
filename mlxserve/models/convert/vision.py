"""Hugging Face vision-language model directories to MLX format, with mlx-vlm's converter: it
knows each family's weight layout (vision tower, projector, language model) and copies the
image processor's configuration, which the MLX engine reads at load time. Quantizing leaves the
vision tower in full precision, as mlx-vlm does."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from mlxserve.checkpoints import DTYPE_LABELS, VISION_MODEL_TYPES
from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.gguf_convert import ConvertedModel
from mlxserve.models.convert.quantize import QuantSpec

# Families the MLX engine serves with images (mlx-vlm model types).
DTYPES = {"bf16": "bfloat16", "f16": "float16"}


def convert_vision_dir(
    source: Path, out_dir: Path, config: dict, quant: QuantSpec
) -> ConvertedModel:
    model_type = config["model_type"]
    if model_type not in VISION_MODEL_TYPES:
        supported = ", ".join(VISION_MODEL_TYPES)
        raise ConversionError(f"vision model type {model_type!r} is not supported ({supported})")
    try:
        from mlx_vlm.convert import convert
    except ImportError as error:
        raise ConversionError(
            "vision models need mlx-vlm: pip install 'mlxserve[vision]'"
        ) from error
    options = {"dtype": DTYPES.get(quant.mode)}
    if quant.mode == "affine":
        options |= {"quantize": True, "q_bits": quant.bits, "q_group_size": quant.group_size}
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines are not ours to print
        convert(str(source), str(out_dir), trust_remote_code=False, **options)
    text_config = config.get("text_config") or config
    return ConvertedModel(
        architecture=model_type,
        max_context_length=int(text_config.get("max_position_embeddings", 0)),
        quantization=quant.label if quant.mode != "none" else _dtype_label(config),
        type="vlm",
    )


def _dtype_label(config: dict) -> str:
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return DTYPE_LABELS.get(str(dtype), "f32")
