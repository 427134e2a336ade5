"""The LoRA adapter folder both the store and the MLX engine read: mlx-lm's, as `mlx_lm.lora`
writes it."""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"  # fine_tune_type, lora_parameters (rank, scale)
ADAPTER_WEIGHTS = "adapters.safetensors"  # <layer path>.lora_a and .lora_b


def is_adapter_folder(directory: Path) -> bool:
    return (directory / ADAPTER_CONFIG).is_file() and (directory / ADAPTER_WEIGHTS).is_file()


def read_adapter_config(directory: Path) -> dict:
    return json.loads((directory / ADAPTER_CONFIG).read_text())
