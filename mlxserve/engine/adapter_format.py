"""The LoRA adapter folders both the store and the MLX engine read: mlx-lm's, as `mlx_lm.lora`
writes it, and Hugging Face PEFT's, as `save_pretrained` writes a LoRA adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx

ADAPTER_CONFIG = "adapter_config.json"  # both layouts name their config so
ADAPTER_WEIGHTS = "adapters.safetensors"  # mlx-lm: <layer path>.lora_a (in x r) and .lora_b
PEFT_WEIGHTS = "adapter_model.safetensors"  # PEFT: <prefix><layer path>.lora_A.weight (r x in)
PEFT_PREFIX = "base_model.model."  # what PEFT's model wrapper adds to every layer path
# PEFT options that change the arithmetic beyond `W x + scale * B A x`, refused with their name.
PEFT_UNSERVED = ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "fan_in_fan_out")


def weights_file(directory: Path) -> Path | None:
    """The folder's adapter weights, in whichever layout it has."""
    for name in (ADAPTER_WEIGHTS, PEFT_WEIGHTS):
        if (directory / name).is_file():
            return directory / name
    return None


def is_adapter_folder(directory: Path) -> bool:
    return (directory / ADAPTER_CONFIG).is_file() and weights_file(directory) is not None


def read_adapter_config(directory: Path) -> dict:
    return json.loads((directory / ADAPTER_CONFIG).read_text())


def is_peft(config: dict) -> bool:
    return "peft_type" in config


def lora_scale(config: dict) -> float:
    """The factor of the low-rank update, from either layout's config; ValueError naming what is
    not plain LoRA."""
    if not is_peft(config):
        kind = config.get("fine_tune_type", "lora")
        if kind != "lora":
            raise ValueError(f"fine_tune_type is {kind}; only LoRA adapters are served")
        parameters = config.get("lora_parameters") or {}
        if "scale" not in parameters:
            raise ValueError("lora_parameters has no 'scale'")
        return float(parameters["scale"])
    if config["peft_type"] != "LORA":
        raise ValueError(f"peft_type is {config['peft_type']}; only LoRA adapters are served")
    unserved = [option for option in PEFT_UNSERVED if config.get(option)]
    if unserved:
        raise ValueError(f"PEFT's {', '.join(unserved)} is not served")
    if not config.get("r"):
        raise ValueError("the PEFT config has no LoRA rank 'r'")
    rank, alpha = float(config["r"]), float(config.get("lora_alpha", config["r"]))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def peft_layer_path(key: str) -> tuple[str, str] | None:
    """(layer path, 'lora_a' or 'lora_b') of a PEFT tensor name; None for anything else."""
    stem = key.removeprefix(PEFT_PREFIX).removesuffix(".weight")
    path, _, leaf = stem.rpartition(".")
    leaf = {"lora_A": "lora_a", "lora_B": "lora_b"}.get(leaf)
    return (path, leaf) if leaf and key.endswith(".weight") else None


def read_lora(directory: Path) -> tuple[float, dict[str, tuple[mx.array, mx.array]]]:
    """An adapter folder's scale and matrices by layer path, in mlx-lm's orientation (`lora_a`
    in x rank, `lora_b` rank x out) whichever layout it has; ValueError naming what does not
    fit."""
    config = read_adapter_config(directory)
    scale = lora_scale(config)
    pairs: dict[str, dict[str, mx.array]] = {}
    for key, tensor in mx.load(str(weights_file(directory))).items():
        if is_peft(config):
            found = peft_layer_path(key)
            # PEFT stores the factors as torch's Linear weights (out x in): transposed here.
            found, tensor = (found, tensor.T) if found else (None, tensor)
        else:
            path, _, leaf = key.rpartition(".")
            found = (path, leaf) if leaf in ("lora_a", "lora_b") else None
        if found is None:
            raise ValueError(f"'{key}' is not a LoRA matrix")
        pairs.setdefault(found[0], {})[found[1]] = tensor
    if any(len(pair) != 2 for pair in pairs.values()):
        raise ValueError("a layer has lora_a or lora_b but not both")
    return scale, {path: (pair["lora_a"], pair["lora_b"]) for path, pair in pairs.items()}
