"""Tiny GGUF files for converter tests, written the way llama.cpp's convert_hf_to_gguf.py writes
them: from a random-weight mlx-lm model (Hugging Face tensor layout), with llama.cpp's names,
its Q/K row permutation for the llama arch, Gemma's +1 on RMSNorm weights, and a small but
real SentencePiece or byte-level BPE vocabulary in the metadata.

This module is the independent reference the converter is checked against: it implements
llama.cpp's forward transforms, the converter implements their inverses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, TokenType
from gguf import quants as gguf_quants
from mlx.utils import tree_flatten
from mlx_lm.utils import _get_classes

from mlxserve.models.convert.gguf_reader import read_gguf

Q = GGMLQuantizationType
WORDS = ["the", "hello", "world", "in", "and", "code", "def", "return", "token", "model"]
SPM_CONTROL = {
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
    "llama": ["<unk>", "<s>", "</s>"],
    "phi3": ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"],
}
# (bos, eos, unk, pad) as in the real files of each family
SPM_IDS = {
    "gemma": ("<bos>", "<eos>", "<unk>", "<pad>"),
    "llama": ("<s>", "</s>", "<unk>", None),
    "phi3": ("<s>", "<|endoftext|>", "<unk>", "<|endoftext|>"),
}
BPE_CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# f16 scale fields (byte offsets in a block) that random bytes would turn into inf/NaN
SCALE_OFFSETS = {
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
    Q.IQ4_NL: (0,),
    Q.IQ4_XS: (0,),
}


@dataclass
class TinyArch:
    gguf_arch: str
    config: dict
    tokenizer: str  # "spm-gemma" | "spm-llama" | "spm-phi3" | "bpe"
    permute_qk: bool = False
    norm_shift: float = 0.0
    metadata: dict = field(default_factory=dict)


def _base(model_type: str, **extra) -> dict:
    config = {
        "model_type": model_type,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    }
    config.update(extra)
    return config


TINY_ARCHS = {
    "llama": TinyArch("llama", _base("llama"), "spm-llama", permute_qk=True),
    "mistral": TinyArch(
        "llama",
        _base("llama", num_key_value_heads=1, rope_theta=1e6),
        "spm-llama",
        permute_qk=True,
        metadata={"general.name": "Mistral Tiny"},
    ),
    "qwen2": TinyArch("qwen2", _base("qwen2", rope_theta=1e6, tie_word_embeddings=True), "bpe"),
    "qwen3": TinyArch("qwen3", _base("qwen3", head_dim=32, tie_word_embeddings=True), "bpe"),
    "gemma2": TinyArch(
        "gemma2",
        _base(
            "gemma2",
            query_pre_attn_scalar=16,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        ),
        "spm-gemma",
        norm_shift=1.0,
    ),
    "gemma3": TinyArch(
        "gemma3",
        _base(
            "gemma3_text",
            num_hidden_layers=6,
            num_key_value_heads=1,
            query_pre_attn_scalar=16,
            sliding_window=8,
            sliding_window_pattern=6,
            rope_theta=1e6,
            rope_local_base_freq=10000.0,
        ),
        "spm-gemma",
        norm_shift=1.0,
    ),
    "phi3": TinyArch(
        "phi3",
        _base("phi3", num_key_value_heads=4, original_max_position_embeddings=512),
        "spm-phi3",
    ),
}


# ---- vocabularies ----------------------------------------------------------------------------


def spm_vocab(kind: str) -> tuple[list[str], list[float], list[int]]:
    """Control tokens, 256 byte-fallback tokens, then pieces best-first (SentencePiece style)."""
    control = SPM_CONTROL[kind]
    pieces = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyz")
    for word in WORDS:
        spelled = "\u2581" + word
        pieces += [
            spelled[: i + 1] for i in range(1, len(spelled)) if spelled[: i + 1] not in pieces
        ]
    tokens = control + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = (
        [TokenType.CONTROL] * len(control)
        + [TokenType.BYTE] * 256
        + [TokenType.NORMAL] * len(pieces)
    )
    scores = [0.0] * (len(control) + 256) + [-float(i) for i in range(len(pieces))]
    if kind == "llama":
        types[0] = TokenType.UNKNOWN
    return tokens, scores, [int(t) for t in types]


def byte_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-printable-character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    )
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def bpe_vocab() -> tuple[list[str], list[str], list[int]]:
    """Byte alphabet, merges that build ' the', ' hello', ..., then ChatML control tokens."""
    alphabet = byte_unicode()
    tokens = [alphabet[b] for b in range(256)]
    merges = []
    for word in WORDS:
        spelled = "".join(alphabet[b] for b in f" {word}".encode())
        for i in range(2, len(spelled) + 1):
            left, right = spelled[: i - 1], spelled[i - 1]
            if spelled[:i] not in tokens:
                merges.append(f"{left} {right}")
                tokens.append(spelled[:i])
    types = [int(TokenType.NORMAL)] * len(tokens) + [int(TokenType.CONTROL)] * len(BPE_CONTROL)
    return tokens + BPE_CONTROL, merges, types


def vocab_size(arch: TinyArch) -> int:
    if arch.tokenizer == "bpe":
        return len(bpe_vocab()[0])
    return len(spm_vocab(arch.tokenizer.split("-")[1])[0])


def add_tokenizer(writer: GGUFWriter, arch: TinyArch, chat_template: str | None = None) -> None:
    if arch.tokenizer == "bpe":
        tokens, merges, types = bpe_vocab()
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_eos_token_id(tokens.index("<|endoftext|>"))
        writer.add_bos_token_id(tokens.index("<|endoftext|>"))
        writer.add_pad_token_id(tokens.index("<|endoftext|>"))
        writer.add_add_bos_token(False)
    else:
        kind = arch.tokenizer.split("-")[1]
        tokens, scores, types = spm_vocab(kind)
        bos, eos, unk, pad = SPM_IDS[kind]
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(tokens.index(bos))
        writer.add_eos_token_id(tokens.index(eos))
        writer.add_unk_token_id(tokens.index(unk))
        if pad is not None:
            writer.add_pad_token_id(tokens.index(pad))
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(kind != "gemma")
    if chat_template:
        writer.add_chat_template(chat_template)


# ---- reference model -------------------------------------------------------------------------


def reference_model(arch: TinyArch, seed: int = 0, **overrides):
    """A random-weight mlx-lm model in Hugging Face layout; returns (model, config, weights)."""
    config = {**arch.config, "vocab_size": vocab_size(arch), **overrides}
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    if arch.config["model_type"] == "gemma3_text":
        model.sanitize({})  # Gemma 3 ties its output layer to the embedding
    rng = np.random.default_rng(seed)
    weights = {}
    for name, param in tree_flatten(model.parameters()):
        if name.endswith("norm.weight"):
            base = 0.0 if arch.norm_shift else 1.0
            weights[name] = (base + 0.1 * rng.standard_normal(param.shape)).astype(np.float32)
        else:
            scale = 0.5 if "embed_tokens" in name else 0.08
            weights[name] = (scale * rng.standard_normal(param.shape)).astype(np.float32)
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()])
    mx.eval(model.parameters())
    return model, config, weights


# ---- llama.cpp's conventions -----------------------------------------------------------------

LAYER_PARTS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate_up_proj": "ffn_up",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(hf_name: str, arch: TinyArch) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    part, _, kind = rest.rpartition(".")
    if part == "post_attention_layernorm":
        gguf_part = "post_attention_norm" if arch.norm_shift else "ffn_norm"
    else:
        gguf_part = LAYER_PARTS[part]
    return f"blk.{layer}.{gguf_part}.{kind}"


def llamacpp_permute(values: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: halves become interleaved pairs."""
    head_dim = values.shape[0] // heads
    return (
        values.reshape(heads, 2, head_dim // 2, *values.shape[1:])
        .swapaxes(1, 2)
        .reshape(values.shape)
    )


def to_gguf_layout(hf_name: str, values: np.ndarray, arch: TinyArch, config: dict) -> np.ndarray:
    if arch.norm_shift and hf_name.endswith("norm.weight"):
        return values + np.float32(arch.norm_shift)
    if arch.permute_qk and hf_name.endswith("q_proj.weight"):
        return llamacpp_permute(values, config["num_attention_heads"])
    if arch.permute_qk and hf_name.endswith("k_proj.weight"):
        return llamacpp_permute(values, config["num_key_value_heads"])
    return values


def random_blocks(shape: tuple[int, ...], qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Random blocks of a type gguf cannot quantize to, with small finite f16 scales."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rows, blocks = int(np.prod(shape[:-1])), shape[-1] // block_size
    raw = rng.integers(0, 256, size=(rows * blocks, type_size), dtype=np.uint8)
    for offset in SCALE_OFFSETS[qtype]:
        scales = (rng.uniform(2e-4, 1e-3, size=rows * blocks)).astype(np.float16)
        raw[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return raw.reshape(*shape[:-1], blocks * type_size)


def encode(values: np.ndarray, qtype: Q, rng: np.random.Generator) -> tuple[np.ndarray, Q]:
    """(stored array, its GGML type); 1-D tensors stay F32 as llama.cpp keeps them."""
    if values.ndim == 1 or qtype == Q.F32:
        return values.astype(np.float32), Q.F32
    if qtype == Q.F16:
        return values.astype(np.float16), Q.F16
    if qtype in SCALE_OFFSETS:
        return random_blocks(values.shape, qtype, rng), qtype
    return gguf_quants.quantize(values, qtype), qtype


def add_metadata(writer: GGUFWriter, arch: TinyArch, config: dict) -> None:
    writer.add_name(arch.metadata.get("general.name", f"Tiny {arch.gguf_arch}"))
    writer.add_organization("Test Org")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_theta"])
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    if arch.gguf_arch in ("qwen3", "gemma2", "gemma3"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch.gguf_arch in ("llama", "phi3"):
        writer.add_rope_dimension_count(head_dim)
    if arch.gguf_arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(config.get("sliding_window", 4096))
    if arch.gguf_arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if arch.gguf_arch == "phi3":
        writer.add_rope_scaling_orig_ctx_len(config["original_max_position_embeddings"])


def write_tiny_gguf(
    path: Path,
    arch: TinyArch,
    weights: dict,
    config: dict,
    qtype: Q = Q.F32,
    chat_template: str | None = None,
    seed: int = 0,
    tokenizer_of: dict | None = None,
) -> dict:
    """Write the GGUF; return {gguf tensor name: (stored array, type)} for reference checks.
    `tokenizer_of`: a real GGUF's metadata, whose tokenizer fields replace the tiny one's."""
    rng = np.random.default_rng(seed + 1)
    writer = GGUFWriter(str(path), arch.gguf_arch)
    add_metadata(writer, arch, config)
    if tokenizer_of is None:
        add_tokenizer(writer, arch, chat_template)
    else:
        copy_tokenizer(writer, tokenizer_of)
    stored = {}
    for hf_name, values in weights.items():
        name = gguf_name(hf_name, arch)
        data, dtype = encode(to_gguf_layout(hf_name, values, arch, config), qtype, rng)
        writer.add_tensor(name, data, raw_dtype=dtype if dtype not in (Q.F32, Q.F16) else None)
        stored[name] = (data, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def copy_tokenizer(writer: GGUFWriter, metadata: dict) -> None:
    """Every tokenizer field of a GGUF's metadata (ids as uint32, as llama.cpp writes them)."""
    for key, value in metadata.items():
        if not key.startswith("tokenizer."):
            continue
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)


def write_twin(source: Path, path: Path, arch: TinyArch, **overrides) -> None:
    """A tiny random-weight model of `arch` that speaks the real GGUF's vocabulary: the same
    tokens, template and special tokens, so it reads the same prompts in a fraction of the
    time where what the model answers proves nothing."""
    # The project's header reader: gguf.GGUFReader takes 16 s over Gemma's 262k tokens.
    metadata = read_gguf(source).metadata
    vocab = len(metadata["tokenizer.ggml.tokens"])
    _, config, weights = reference_model(arch, vocab_size=vocab, **overrides)
    write_tiny_gguf(path, arch, weights, config, Q.F16, tokenizer_of=metadata)


def dequantized(stored: tuple[np.ndarray, Q]) -> np.ndarray:
    """The `gguf` package's own dequantization of a stored tensor: the reference values."""
    data, qtype = stored
    if qtype in (Q.F32, Q.F16):
        return data.astype(np.float32)
    return gguf_quants.dequantize(data, qtype)
