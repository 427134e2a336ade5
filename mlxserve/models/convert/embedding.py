"""Importing a BERT encoder into the store: a sentence-transformers embedding model (such as
all-MiniLM-L6-v2), or a one-label sequence classifier read as a cross-encoder reranker (BERT's,
such as the ms-marco MiniLM cross-encoders, or XLM-RoBERTa's, such as bge-reranker-v2-m3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx

from mlxserve.engine.mlx.architectures.bert import ROBERTA_TYPES, BertModel, cross_encoder_class
from mlxserve.models.convert.errors import ConversionError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
)
RERANKERS = {
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
}
DEFAULT_MAX_SEQ_LENGTH = 256  # sentence-transformers' window for MiniLM-style models
RERANKER_MAX_SEQ_LENGTH = 512  # a query and a passage: the length BGE's rerankers are run at


def import_embedding_model(source: Path, target_dir: Path) -> dict:
    """Write the encoder's weights (float32 safetensors), config and tokenizer into target_dir;
    return the manifest fields the store records for it."""
    config = json.loads((source / "config.json").read_text())
    weights_file = source / "model.safetensors"
    if not weights_file.is_file():
        raise ConversionError(f"{source} has no model.safetensors")
    if not (source / "tokenizer.json").is_file():
        raise ConversionError(f"{source} has no tokenizer.json")
    reranker = bool(RERANKERS & set(config.get("architectures", [])))
    if not reranker and config["model_type"] in ROBERTA_TYPES:
        raise ConversionError(f"{source}: RoBERTa models convert as rerankers only")
    if reranker and len(config.get("id2label", {0: "score"})) != 1:
        raise ConversionError(f"{source}: a reranker scores with one label; this one has more")
    kept = cross_encoder_class(config).sanitize if reranker else BertModel.sanitize
    weights = kept(mx.load(str(weights_file)))
    mx.save_safetensors(
        str(target_dir / "model.safetensors"),
        {name: value.astype(mx.float32) for name, value in weights.items()},
    )
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target_dir / name)
    window = _max_seq_length(source, config, reranker)
    config["max_seq_length"] = window
    (target_dir / "config.json").write_text(json.dumps(config, indent=2))
    return {
        "architecture": config["model_type"],
        "type": "rerank" if reranker else "embeddings",
        "max_context_length": window,
        "quantization": "f32",
    }


def _max_seq_length(source: Path, config: dict, reranker: bool) -> int:
    sbert = source / "sentence_bert_config.json"
    if sbert.is_file():
        return int(json.loads(sbert.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
    # RoBERTa's table holds the padding id's positions too: 514 rows for a 512-token window.
    positions = int(config.get("max_position_embeddings", 512))
    if config["model_type"] in ROBERTA_TYPES:
        positions -= int(config.get("pad_token_id", 1)) + 1
    return min(positions, RERANKER_MAX_SEQ_LENGTH if reranker else DEFAULT_MAX_SEQ_LENGTH)
