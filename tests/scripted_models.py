"""Tiny models of real mlx-lm architectures whose greedy decoding writes a fixed script of tokens.

With every weight inside the transformer layers zero, no layer adds anything to the residual
stream, so the last position's hidden state is the current token's embedding through the final
norm. Each script piece gets an embedding dimension of its own (every other token shares one
more), and the output layer maps piece i's dimension to piece i + 1 and the shared one to piece
0: from any prompt whose last token is not a piece, greedy decoding writes the script, one token
per piece. Tests drive a server through a family's tool-call and reasoning syntax with them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from mlxserve.models.store import ModelRecord, write_manifest

CONTEXT = 4096
PAD, UNK = "<pad>", "<unk>"  # pad is id 0: what argmax picks when every logit ties
WEIGHT = 10.0  # output weight; the scripted token's logit is this times sqrt(hidden)

_COMMON = {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": CONTEXT,
    "tie_word_embeddings": False,
    "attention_bias": False,
}
_MOE = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
}
_GATED_DELTA = {  # layer 0 is linear attention, layer 1 full attention
    "linear_num_value_heads": 2,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "full_attention_interval": 2,
    "partial_rotary_factor": 0.25,
}
_DEEPSEEK = {  # multi-head latent attention; layer 0 dense, layer 1 routed experts
    "num_key_value_heads": 4,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": 32,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
}
_SLIDING_THEN_FULL = ["sliding_attention", "full_attention"]

# What each mlx-lm model_type needs beyond _COMMON, hidden size and vocabulary.
_ARCHITECTURES: dict[str, dict] = {
    "llama": {},
    "qwen3": {},
    "qwen3_moe": _MOE,
    "qwen3_next": {**_MOE, **_GATED_DELTA, "shared_expert_intermediate_size": 32},
    "qwen3_5": {
        **_GATED_DELTA,
        "rope_parameters": {
            "type": "default",
            "mrope_section": [1, 1, 0],
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
        },
    },
    "gemma4_text": {
        "num_key_value_heads": 1,
        "global_head_dim": 16,
        "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0,
        "use_double_wide_mlp": False,
        "sliding_window": 8,
        "layer_types": _SLIDING_THEN_FULL,
        "final_logit_softcapping": 30.0,
    },
    "glm4_moe": {
        **_MOE,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 1.0,
        "first_k_dense_replace": 1,
        "rope_scaling": None,
        "use_qk_norm": True,
        "partial_rotary_factor": 0.5,
    },
    "deepseek_v3": _DEEPSEEK,
    "minimax": {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "shared_intermediate_size": 0,
        "rotary_dim": 8,
    },
    "lfm2": {
        "norm_eps": 1e-5,
        "conv_bias": False,
        "conv_L_cache": 3,
        "block_multiple_of": 16,
        "block_ffn_dim_multiplier": 1.0,
        "block_auto_adjust_ff_dim": False,
        "layer_types": ["conv", "full_attention"],
    },
    "ministral3": {
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": CONTEXT,
        },
    },
    "gpt_oss": {
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 8,
        "layer_types": _SLIDING_THEN_FULL,
    },
}
# Multimodal wrappers that mlx-lm loads as their text model: config["text_config"].
_WRAPPED = {"mistral3": "ministral3", "kimi_k25": "deepseek_v3"}
ARCHITECTURES = tuple(sorted([*_ARCHITECTURES, *_WRAPPED]))


def make_scripted_model(
    directory: Path,
    *,
    architecture: str,
    script: Sequence[str],
    chat_template: str,
    specials: Sequence[str] = (),
    eos: str = "<eos>",
    bos: str = "<bos>",
    extra_tokens: Sequence[str] = (),
    manifest_architecture: str | None = None,
) -> ModelRecord:
    """Write a model of mlx-lm's `architecture` (a model_type, see ARCHITECTURES) that, from any
    prompt whose last token is not a script piece, greedily writes `script`, one token per piece,
    and stops if it ends with `eos` (else it writes PAD and starts over). `specials` become
    special tokens, the pieces and `extra_tokens` plain added ones; `manifest_architecture` is
    what the store records.

    Decoded text: special pieces show in mlx-lm's streamed text and in decode() unless special
    tokens are skipped. mlx-lm's streaming detokenizer reads added tokens as byte-level symbols,
    so a piece with Latin-1 letters (U+00A1-U+0143, e.g. "é") streams garbled, and a leading
    space on the very first piece is trimmed; CJK, fullwidth and other characters are fine."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"no scripted config for {architecture!r}; known: {ARCHITECTURES}")
    _check_script(script, eos)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _scripted_tokenizer(script, specials, eos, bos, extra_tokens)
    ids = [_single_id(tokenizer, piece) for piece in script]
    hidden = max(64, 16 * -(-(len(ids) + 2) // 16))  # a dimension per piece, one for the rest
    config = _config(architecture, hidden, tokenizer.get_vocab_size())
    config["eos_token_id"] = tokenizer.token_to_id(eos)
    config["bos_token_id"] = tokenizer.token_to_id(bos)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(directory / "model.safetensors"), _scripted_weights(config, ids))
    _write_tokenizer(tokenizer, directory, chat_template, eos, bos, specials)
    record = ModelRecord(
        id=f"{directory.parent.name}/{directory.name}",  # the store's publisher/name layout
        format="mlx",
        architecture=manifest_architecture or architecture,
        quantization="f32",
        max_context_length=CONTEXT,
        path=str(directory),
    )
    write_manifest(directory, record)
    return record


def _check_script(script: Sequence[str], eos: str) -> None:
    if not script or not all(script):
        raise ValueError("the script needs at least one piece, and no empty ones")
    if len(set(script)) != len(script):
        raise ValueError("script pieces must be distinct: each one picks the next")
    if eos in script[:-1]:
        raise ValueError("eos can only end the script: generation stops there")
    if PAD in script:
        raise ValueError(f"{PAD} follows the script's last piece, so it cannot be one")


def _config(architecture: str, hidden: int, vocab: int) -> dict:
    inner = _WRAPPED.get(architecture, architecture)
    config = {
        "model_type": inner,
        **_COMMON,
        "hidden_size": hidden,
        "intermediate_size": hidden,
        "vocab_size": vocab,
        **_ARCHITECTURES[inner],
    }
    if inner == "lfm2":
        config["block_dim"] = hidden  # LFM2 names its width twice
    if inner != architecture:
        return {"model_type": architecture, "text_config": config}
    return config


def _build(config: dict) -> nn.Module:
    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    return module.Model(module.ModelArgs.from_dict(config))


def _scripted_weights(config: dict, ids: list[int]) -> dict[str, mx.array]:
    """Zero layers, one-hot embeddings and an output layer that maps each piece to the next.
    Norms outside the layers keep their initial (identity) scale."""
    weights = dict(tree_flatten(_build(config).parameters()))
    vocab, hidden = weights[_key(weights, "embed_tokens.weight")].shape
    rest = len(ids)  # the dimension every token outside the script shares
    dimension = [rest] * vocab
    for i, token in enumerate(ids):
        dimension[token] = i
    columns = mx.arange(hidden)[None, :]
    for key, value in weights.items():
        # gemma4 scales each layer's whole output by layer_scalar: it must stay one
        if "layers" in key.split(".") and not key.endswith("layer_scalar"):
            weights[key] = mx.zeros_like(value)
    embedding = columns == mx.array(dimension)[:, None]
    weights[_key(weights, "embed_tokens.weight")] = embedding.astype(mx.float32)
    steps = _steps(len(ids))
    if any(key.endswith("lm_head.weight") for key in weights):
        source = [-1] * vocab  # row of token t: the dimension t follows, or none
        for before, after in steps.items():
            source[ids[after] if after < rest else 0] = before  # 0 is PAD, after the script
        head = WEIGHT * (columns == mx.array(source)[:, None])
        weights[_key(weights, "lm_head.weight")] = head.astype(mx.float32)
    else:
        _route_through_feed_forward(weights, config, steps)
    return weights


def _steps(pieces: int) -> dict[int, int]:
    """Embedding dimension -> the dimension of the token that follows it. Dimension `pieces`
    is the rest's: it starts the script, and closes it with PAD, so that a script without eos
    repeats after a PAD."""
    return {pieces: 0, **{i: i + 1 for i in range(pieces)}}


def _route_through_feed_forward(
    weights: dict[str, mx.array], config: dict, steps: dict[int, int]
) -> None:
    """LFM2 always ties its output layer to the embeddings, so the successor map lives in the
    last layer's SwiGLU instead: unit d fires (about hidden) only on dimension d and writes
    WEIGHT times that into its successor's dimension, which then dominates the final norm.
    After the last piece every other token ties, and argmax takes the first: PAD."""
    prefix = f"model.layers.{config['num_hidden_layers'] - 1}."
    gate = weights[prefix + "feed_forward.w1.weight"]
    units, hidden = gate.shape
    identity = (mx.arange(units)[:, None] == mx.arange(hidden)[None, :]).astype(mx.float32)
    down = mx.zeros((hidden, units))
    for before, after in steps.items():
        down[after, before] = WEIGHT
    weights[prefix + "feed_forward.w1.weight"] = identity
    weights[prefix + "feed_forward.w3.weight"] = identity
    weights[prefix + "feed_forward.w2.weight"] = down
    weights[prefix + "ffn_norm.weight"] = mx.ones((hidden,))
    embedding = _key(weights, "embed_tokens.weight")
    weights[embedding] = WEIGHT * weights[embedding]  # the tied output's logit scale


def _key(weights: dict[str, mx.array], suffix: str) -> str:
    (key,) = (k for k in weights if k.endswith(suffix))
    return key


def _scripted_tokenizer(
    script: Sequence[str],
    specials: Sequence[str],
    eos: str,
    bos: str,
    extra_tokens: Sequence[str],
) -> Tokenizer:
    """Byte-level BPE over the 256 byte symbols, with every special and piece added whole."""
    core = list(dict.fromkeys([PAD, bos, eos, UNK]))
    pieces = core + sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, [], unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(dict.fromkeys([*core, *specials])))
    for piece in dict.fromkeys([*script, *extra_tokens]):
        if len(tokenizer.encode(piece, add_special_tokens=False).ids) != 1:
            tokenizer.add_tokens([AddedToken(piece, special=False, normalized=False)])
    return tokenizer


def _single_id(tokenizer: Tokenizer, piece: str) -> int:
    ids = tokenizer.encode(piece, add_special_tokens=False).ids
    if len(ids) != 1:  # e.g. a piece that starts with another added token
        raise ValueError(f"script piece {piece!r} encodes to {len(ids)} tokens, not one")
    return ids[0]


def _write_tokenizer(
    tokenizer: Tokenizer,
    directory: Path,
    chat_template: str,
    eos: str,
    bos: str,
    specials: Sequence[str],
) -> None:
    tokenizer.save(str(directory / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": PAD,
        "unk_token": UNK,
        "add_bos_token": False,
        # as real configs do, so that transformers counts them in all_special_tokens
        "additional_special_tokens": [
            t for t in dict.fromkeys(specials) if t not in (PAD, UNK, eos, bos)
        ],
        "chat_template": chat_template,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
