"""Importing a BERT encoder into the store: a sentence-transformers embedding model (such as
all-MiniLM-L6-v2), or a one-label sequence classifier read as a cross-encoder reranker (such as
the ms-marco MiniLM cross-encoders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx

from mlxserve.engine.mlx.architectures.bert import BertCrossEncoder, BertModel
from mlxserve.models.convert.errors import ConversionError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
DEFAULT_MAX_SEQ_LENGTH = 256  # sentence-transformers' window for MiniLM-style models


def import_embedding_model(source: Path, target_dir: Path) -> dict:
    """Write the encoder's weights (float32 safetensors), config and tokenizer into target_dir;
    return the manifest fields the store records for it."""
    config = json.loads((source / "config.json").read_text())
    weights_file = source / "model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{source} has no model.safetensors")
    if not (source / "tokenizer.json").is_file():
        raise ConversionError(f"{source} has no tokenizer.json")
    reranker = "BertForSequenceClassification" in config.get("architectures", [])
    if reranker and len(config.get("id2label", {0: "score"})) != 1:
        raise ConversionError(f"{source}: a reranker scores with one label; this one has more")
    kept = BertCrossEncoder.sanitize if reranker else BertModel.sanitize
    weights = kept(mx.load(str(weights_file)))
    mx.save_safetensors(
        str(target_dir / "model.safetensors"),
        {name: value.astype(mx.float32) for name, value in weights.items()},
    )
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target_dir / name)
    window = _max_seq_length(source, config)
    config["max_seq_length"] = window
    (target_dir / "config.json").write_text(json.dumps(config, indent=2))
    return {
        "architecture": "bert",
        "type": "rerank" if reranker else "embeddings",
        "max_context_length": window,
        "quantization": "f32",
    }


def _max_seq_length(source: Path, config: dict) -> int:
    sbert = source / "sentence_bert_config.json"
    if sbert.is_file():
        return int(json.loads(sbert.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
    return min(int(config.get("max_position_embeddings", 512)), DEFAULT_MAX_SEQ_LENGTH)
