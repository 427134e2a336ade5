"""Tiny random-weight models in the store's MLX layout, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import gemma3_text, mamba, qwen2
from mlx_lm.utils import save_config, save_model
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from mlxserve.models.store import ModelRecord, write_manifest

SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
WORDS = SPECIAL + [f"w{i}" for i in range(92)]
CALL_MARKERS = ["<tool_call>", "</tool_call>"]  # added tokens, as in Qwen's vocabulary


def make_tiny_gemma(
    directory: Path,
    seed: int = 0,
    bytes_vocabulary: bool = False,
    architecture: str = "gemma3",
    head_dim: int = 16,
) -> ModelRecord:
    """A 2-layer Gemma 3 text model with sliding window 8, over a 96-word vocabulary or, with
    `bytes_vocabulary`, over single bytes and Qwen's call markers (so it can write any JSON).
    `architecture` is what the store records, which picks the chat template and call syntax;
    `head_dim` 64 or more lets its keys and values be quantized in groups of 64."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_tokenizer() if bytes_vocabulary else _word_tokenizer()
    context = 4096 if bytes_vocabulary else 512  # a byte per token makes long prompts
    config = {
        "model_type": "gemma3_text",
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-6,
        "vocab_size": tokenizer.get_vocab_size(),
        "num_key_value_heads": 1,
        "sliding_window": 8,
        "sliding_window_pattern": 2,
        "max_position_embeddings": context,
        "eos_token_id": [2],
        "bos_token_id": 1,
    }
    (directory / "config.json").write_text(json.dumps(config))
    mx.random.seed(seed)
    model = gemma3_text.Model(gemma3_text.ModelArgs.from_dict(config))
    mx.save_safetensors(
        str(directory / "model.safetensors"), dict(tree_flatten(model.parameters()))
    )
    _write_tokenizer(tokenizer, directory)
    record = ModelRecord(
        id=f"{directory.parent.name}/{directory.name}",  # the store's publisher/name layout
        format="mlx",
        architecture=architecture,
        quantization="f32",
        max_context_length=context,
        path=str(directory),
    )
    write_manifest(directory, record)
    return record


def make_tiny_qwen2(directory: Path, seed: int = 0) -> ModelRecord:
    """A 4-layer Qwen2 over the byte vocabulary, saved with mlx-lm's own writer (weights and
    their index), with heads that two ranks can share: mlx-lm can split it by tensors
    (`shard()`) and by layers (`pipeline()`)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_tokenizer()
    config = {
        "model_type": "qwen2",
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": [2],
        "bos_token_id": 1,
    }
    mx.random.seed(seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    save_model(directory, model)
    save_config(config, directory / "config.json")
    _write_tokenizer(tokenizer, directory)
    record = ModelRecord(
        id=f"{directory.parent.name}/{directory.name}",
        format="mlx",
        architecture="qwen2",
        quantization="f32",
        max_context_length=2048,
        path=str(directory),
    )
    write_manifest(directory, record)
    return record


def make_tiny_mamba(directory: Path) -> Path:
    """A 2-layer Mamba over the byte vocabulary: a model whose cache is recurrent state, not a
    key and value per token."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_tokenizer()
    config = {
        "model_type": "mamba",
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 32,
        "intermediate_size": 64,
        "state_size": 8,
        "num_hidden_layers": 2,
        "conv_kernel": 4,
        "use_bias": False,
        "use_conv_bias": True,
        "time_step_rank": 4,
        "eos_token_id": [2],
        "bos_token_id": 1,
    }
    (directory / "config.json").write_text(json.dumps(config))
    mx.random.seed(0)
    model = mamba.Model(mamba.ModelArgs.from_dict(config))
    mx.save_safetensors(
        str(directory / "model.safetensors"), dict(tree_flatten(model.parameters()))
    )
    _write_tokenizer(tokenizer, directory)
    return directory


def _word_tokenizer() -> Tokenizer:
    vocab = {word: i for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.add_special_tokens(SPECIAL)
    return tokenizer


def _byte_tokenizer() -> Tokenizer:
    pieces = SPECIAL + CALL_MARKERS + sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, [], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.add_tokens([AddedToken(m, special=False, normalized=False) for m in CALL_MARKERS])
    return tokenizer


def _write_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "add_bos_token": False,
            }
        )
    )
