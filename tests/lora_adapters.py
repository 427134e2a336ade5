"""LoRA adapters with random low-rank weights, written in mlx-lm's folder format."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from mlxserve.engine.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS

ATTENTION = ("self_attn.q_proj", "self_attn.v_proj")
MLP = ("mlp.gate_proj", "mlp.down_proj")
SHAPES = {  # (in, out) of the tiny Gemma's layers
    "self_attn.q_proj": (64, 64),
    "self_attn.v_proj": (64, 16),
    "mlp.gate_proj": (64, 128),
    "mlp.down_proj": (128, 64),
}
GEMMA_270M_SHAPES = {  # the real Gemma 3 270M's: 640 wide, 4 query heads and 1 KV head of 256
    "self_attn.q_proj": (640, 1024),
    "self_attn.v_proj": (640, 256),
    "mlp.gate_proj": (640, 2048),
    "mlp.down_proj": (2048, 640),
}


def make_adapter(
    directory: Path,
    seed: int,
    *,
    base: str = "",
    keys: tuple[str, ...] = ATTENTION,
    rank: int = 4,
    scale: float = 4.0,
    layers: int = 2,
    total_layers: int = 4,
    shapes: dict = SHAPES,
    spread: float = 0.2,
) -> Path:
    """An adapter of the last `layers` layers of the tiny Gemma, with a nonzero `lora_b` (a
    trained adapter's; mlx-lm starts it at zero) so that it changes the model's output."""
    directory.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    weights = {}
    for layer in range(total_layers - layers, total_layers):
        for key in keys:
            in_dims, out_dims = shapes[key]
            prefix = f"model.layers.{layer}.{key}"
            weights[f"{prefix}.lora_a"] = mx.random.normal((in_dims, rank)) * spread
            weights[f"{prefix}.lora_b"] = mx.random.normal((rank, out_dims)) * spread
    mx.save_safetensors(str(directory / ADAPTER_WEIGHTS), weights)
    config = {
        "fine_tune_type": "lora",
        "num_layers": layers,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0, "keys": list(keys)},
    }
    if base:
        config["model"] = base
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config))
    return directory


def mlx_lm_greedy(model_dir: Path, adapter_dir: Path | None, prompt: str, tokens: int) -> list[int]:
    """mlx-lm's own greedy tokens, the adapter loaded by `mlx_lm.load(adapter_path=...)`."""
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model, tokenizer = load(str(model_dir), adapter_path=str(adapter_dir) if adapter_dir else None)
    prompt_ids = mx.array(tokenizer.encode(prompt))
    steps = generate_step(prompt_ids, model, max_tokens=tokens, sampler=lambda x: x.argmax(-1))
    return [int(token) for token, _ in steps]


def write_peft(
    mlx_adapter: Path, directory: Path, *, rslora: bool = False, prefix: str = "model."
) -> Path:
    """The same adapter in Hugging Face PEFT's layout, as `save_pretrained` writes it: torch
    Linear weights (`lora_A` r x in, `lora_B` out x r) under `base_model.model.<path>`, and the
    scale given as `lora_alpha` over the rank (over its square root with rsLoRA). `prefix`
    stands for the model's own path above the decoder layers in transformers."""
    config = json.loads((mlx_adapter / ADAPTER_CONFIG).read_text())
    rank, scale = config["lora_parameters"]["rank"], config["lora_parameters"]["scale"]
    weights = {}
    for key, tensor in mx.load(str(mlx_adapter / ADAPTER_WEIGHTS)).items():
        path, _, leaf = key.rpartition(".")
        torch_leaf = {"lora_a": "lora_A", "lora_b": "lora_B"}[leaf]
        path = prefix + path.removeprefix("model.")
        weights[f"base_model.model.{path}.{torch_leaf}.weight"] = tensor.T
    directory.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(directory / "adapter_model.safetensors"), weights)
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": scale * (rank**0.5 if rslora else rank),
        "use_rslora": rslora,
        "lora_dropout": 0.0,
        "target_modules": config["lora_parameters"]["keys"],
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (directory / ADAPTER_CONFIG).write_text(json.dumps(peft_config))
    return directory
