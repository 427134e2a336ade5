"""BERT checkpoints written as float32 GGUFs, the layout llama.cpp's converter produces:
all-MiniLM-L6-v2 as a GGUF embedding model for the llama.cpp engine's tests and benchmark, and a
BertForSequenceClassification as a GGUF reranker (rank pooling: the pooler and classifier
become llama.cpp's `cls` and `cls.output`)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
from safetensors.numpy import load_file

RANK_HEAD = {"pooler.dense": "cls", "classifier": "cls.output"}


def write_bert_gguf(source: Path, out: Path, reranker: bool = False) -> None:
    """float32 BERT GGUF with mean pooling (rank pooling for a reranker), WordPiece vocabulary
    in llama.cpp's spelling."""
    config = json.loads((source / "config.json").read_text())
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.RANK if reranker else gguf.PoolingType.MEAN)
    _add_vocab(writer, source, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, config["num_hidden_layers"])
    for name, value in load_file(str(source / "model.safetensors")).items():
        name = name.removeprefix("bert.")
        layer, _, kind = name.rpartition(".")
        if reranker and layer in RANK_HEAD:
            writer.add_tensor(f"{RANK_HEAD[layer]}.{kind}", value)
        elif not name.startswith(("pooler.", "embeddings.position_ids")):  # mean pooling: unread
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_vocab(writer: gguf.GGUFWriter, source: Path, config: dict) -> None:
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    by_id = {i: token for token, i in tokenizer["model"]["vocab"].items()}
    special = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    tokens, kinds = [], []
    for i in range(len(by_id)):
        token = by_id[i]
        if i in special:
            tokens.append(token)
            kinds.append(gguf.TokenType.CONTROL)
        else:  # continuations lose "##"; word starts gain the phantom space
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            kinds.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_type_count(config["type_vocab_size"])
    gguf.SpecialVocab(source, n_vocab=len(tokens)).add_to_gguf(writer)
