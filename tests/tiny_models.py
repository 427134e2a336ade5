"""Tiny random-weight models in the store's MLX layout, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import gemma3_text
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlxserve.models.store import ModelRecord, write_manifest

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(92)]


def make_tiny_gemma(directory: Path, seed: int = 0) -> ModelRecord:
    """A 2-layer Gemma 3 text model over a 96-word vocabulary, sliding window 8."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "gemma3_text",
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "head_dim": 16,
        "rms_norm_eps": 1e-6,
        "vocab_size": len(WORDS),
        "num_key_value_heads": 1,
        "sliding_window": 8,
        "sliding_window_pattern": 2,
        "max_position_embeddings": 512,
        "eos_token_id": [2],
        "bos_token_id": 1,
    }
    (directory / "config.json").write_text(json.dumps(config))
    mx.random.seed(seed)
    model = gemma3_text.Model(gemma3_text.ModelArgs.from_dict(config))
    mx.save_safetensors(
        str(directory / "model.safetensors"), dict(tree_flatten(model.parameters()))
    )
    _write_tokenizer(directory)
    record = ModelRecord(
        id="test/tiny-gemma",
        format="mlx",
        architecture="gemma3",
        quantization="f32",
        max_context_length=512,
        path=str(directory),
    )
    write_manifest(directory, record)
    return record


def _write_tokenizer(directory: Path) -> None:
    vocab = {word: i for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.add_special_tokens(["<pad>", "<bos>", "<eos>", "<unk>"])
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
