"""Per-architecture knowledge: GGUF metadata to mlx-lm config.json, and GGUF tensor names and
layouts to the names and layouts mlx-lm's model classes load.

Quirks of llama.cpp's converter undone here: Gemma RMSNorm weights carry +1, llama-arch Q/K
rows are permuted for llama.cpp's interleaved RoPE, Phi-3 keeps fused qkv and gate_up tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.gguf_reader import GGUFFile
from mlxserve.models.convert.rope import llama3_scaling_from_factors, rope_scaling_from_metadata

GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
CONFIG_ONLY_TENSORS = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"}
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GEMMA_LAYER_NAMES = {
    **LAYER_NAMES,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
PHI3_LAYER_NAMES = {**LAYER_NAMES, "attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}
LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")


@dataclass(frozen=True)
class ArchSpec:
    model_type: str  # the mlx_lm.models module
    build_config: Callable[[GGUFFile], dict]
    layer_names: Mapping[str, str]
    norm_offset: float = 0.0  # llama.cpp stores Gemma's RMSNorm weight as (1 + w)
    permute_qk: bool = False  # llama.cpp permutes llama-arch Q/K rows for its RoPE layout


def _require(gguf: GGUFFile, key: str) -> Any:
    value = gguf.arch_value(key)
    if value is None:
        raise ConversionError(f"GGUF metadata lacks {gguf.architecture}.{key}")
    return value


def _uniform(value: Any, key: str) -> int:
    """Per-layer arrays (head counts, FFN sizes) must be uniform for mlx-lm's dense classes."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise ConversionError(f"per-layer {key} values {sorted(set(value))} are not supported")
        return int(value[0])
    return int(value)


def base_config(gguf: GGUFFile) -> dict:
    heads = _uniform(_require(gguf, "attention.head_count"), "head_count")
    hidden = int(_require(gguf, "embedding_length"))
    if "token_embd.weight" not in gguf.tensors:
        raise ConversionError("the GGUF has no token_embd.weight tensor")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": int(_require(gguf, "block_count")),
        "intermediate_size": _uniform(_require(gguf, "feed_forward_length"), "feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": _uniform(
            gguf.arch_value("attention.head_count_kv", heads), "head_count_kv"
        ),
        "head_dim": int(gguf.arch_value("attention.key_length", hidden // heads)),
        "rms_norm_eps": float(gguf.arch_value("attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": int(gguf.tensors["token_embd.weight"].shape[0]),
        "max_position_embeddings": int(gguf.arch_value("context_length", 4096)),
        "rope_theta": float(gguf.arch_value("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
    }


def llama_config(gguf: GGUFFile) -> dict:
    config = base_config(gguf)
    config["attention_bias"] = "blk.0.attn_q.bias" in gguf.tensors
    config["mlp_bias"] = "blk.0.ffn_up.bias" in gguf.tensors
    config["rope_scaling"] = rope_scaling_from_metadata(gguf.metadata, gguf.architecture)
    if "rope_freqs.weight" in gguf.tensors:
        dims = int(gguf.arch_value("rope.dimension_count", config["head_dim"]))
        original = gguf.arch_value("rope.scaling.original_context_length")
        config["rope_scaling"] = llama3_scaling_from_factors(
            gguf.load("rope_freqs.weight"), dims, config["rope_theta"], original
        )
    return {"model_type": "llama", **config}


def qwen_config(model_type: str) -> Callable[[GGUFFile], dict]:
    def build(gguf: GGUFFile) -> dict:
        config = base_config(gguf)
        config["rope_scaling"] = rope_scaling_from_metadata(gguf.metadata, gguf.architecture)
        return {"model_type": model_type, **config}

    return build


def _query_pre_attn_scalar(config: dict, big_model_layers: int) -> float:
    # llama.cpp scales by hidden/heads for the 27B models, by head_dim for the others
    if config["num_hidden_layers"] == big_model_layers:
        return config["hidden_size"] / config["num_attention_heads"]
    return config["head_dim"]


def gemma2_config(gguf: GGUFFile) -> dict:
    config = base_config(gguf)
    config.update(
        query_pre_attn_scalar=_query_pre_attn_scalar(config, 46),
        attn_logit_softcapping=float(gguf.arch_value("attn_logit_softcapping", 50.0)),
        final_logit_softcapping=float(gguf.arch_value("final_logit_softcapping", 30.0)),
        sliding_window=int(gguf.arch_value("attention.sliding_window", 4096)),
    )
    return {"model_type": "gemma2", **config}


def gemma3_config(gguf: GGUFFile) -> dict:
    config = base_config(gguf)
    config.pop("tie_word_embeddings")  # mlx-lm's gemma3_text ties when lm_head is absent
    config.update(
        query_pre_attn_scalar=_query_pre_attn_scalar(config, 62),
        sliding_window=int(_require(gguf, "attention.sliding_window")),
        sliding_window_pattern=_sliding_window_pattern(gguf),
        rope_local_base_freq=10000.0,  # llama.cpp fixes the local (sliding) layers' base
        rope_scaling=rope_scaling_from_metadata(gguf.metadata, gguf.architecture),
    )
    return {"model_type": "gemma3_text", **config}


def _sliding_window_pattern(gguf: GGUFFile) -> int:
    """llama.cpp uses 5 sliding layers then 1 global; newer files may say so per layer."""
    pattern = gguf.arch_value("attention.sliding_window_pattern", 6)
    if not isinstance(pattern, list):
        return int(pattern)
    period = pattern.index(False) + 1 if False in pattern else len(pattern) + 1
    expected = [(i + 1) % period != 0 for i in range(len(pattern))]
    if [bool(p) for p in pattern] != expected:
        raise ConversionError("irregular sliding-window layer pattern is not supported")
    return period


def phi3_config(gguf: GGUFFile) -> dict:
    config = base_config(gguf)
    rope_dims = int(gguf.arch_value("rope.dimension_count", config["head_dim"]))
    original = gguf.arch_value("rope.scaling.original_context_length")
    config.update(
        partial_rotary_factor=rope_dims / config["head_dim"],
        original_max_position_embeddings=int(original or config["max_position_embeddings"]),
    )
    if "rope_factors_long.weight" in gguf.tensors:
        config["rope_scaling"] = {
            "type": "longrope",
            "long_factor": gguf.load("rope_factors_long.weight").tolist(),
            "short_factor": gguf.load("rope_factors_short.weight").tolist(),
        }
    return {"model_type": "phi3", **config}


ARCHITECTURES = {
    "llama": ArchSpec("llama", llama_config, LAYER_NAMES, permute_qk=True),
    "mistral": ArchSpec("llama", llama_config, LAYER_NAMES, permute_qk=True),
    "qwen2": ArchSpec("qwen2", qwen_config("qwen2"), LAYER_NAMES),
    "qwen3": ArchSpec("qwen3", qwen_config("qwen3"), LAYER_NAMES),
    "gemma2": ArchSpec("gemma2", gemma2_config, GEMMA_LAYER_NAMES, norm_offset=1.0),
    "gemma3": ArchSpec("gemma3_text", gemma3_config, GEMMA_LAYER_NAMES, norm_offset=1.0),
    "phi3": ArchSpec("phi3", phi3_config, PHI3_LAYER_NAMES),
}


def arch_spec(gguf: GGUFFile) -> ArchSpec:
    arch = gguf.architecture
    if arch not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise ConversionError(f"unsupported architecture {arch!r} (supported: {supported})")
    return ARCHITECTURES[arch]


def mlx_name(spec: ArchSpec, gguf_name: str) -> str | None:
    """mlx-lm's parameter name for a GGUF tensor; None for tensors that only feed config.json."""
    if gguf_name in CONFIG_ONLY_TENSORS:
        return None
    stem, _, kind = gguf_name.rpartition(".")
    if stem in GLOBAL_NAMES and kind in ("weight", "bias"):
        return f"{GLOBAL_NAMES[stem]}.{kind}"
    match = LAYER_TENSOR.match(gguf_name)
    if match and match.group(2) in spec.layer_names:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{spec.layer_names[part]}.{kind}"
    raise ConversionError(f"tensor {gguf_name} has no counterpart in mlx-lm's {spec.model_type}")


def unpermute_rope_rows(values: np.ndarray, heads: int) -> np.ndarray:
    """Invert llama.cpp's per-head row permutation (pairs interleaved) back to halves."""
    head_dim = values.shape[0] // heads
    split = values.reshape(heads, head_dim // 2, 2, *values.shape[1:])
    return split.swapaxes(1, 2).reshape(values.shape)


def transform(spec: ArchSpec, gguf_name: str, values: np.ndarray, config: dict) -> np.ndarray:
    """Undo llama.cpp's layout changes for one tensor."""
    if spec.norm_offset and gguf_name.endswith("norm.weight"):
        return values - np.float32(spec.norm_offset)
    if spec.permute_qk:
        part = gguf_name.split(".")[-2] if gguf_name.startswith("blk.") else ""
        if part == "attn_q":
            return unpermute_rope_rows(values, config["num_attention_heads"])
        if part == "attn_k":
            return unpermute_rope_rows(values, config["num_key_value_heads"])
    return values
