"""The tokenizer files of an MLX model directory, built from a GGUF's tokenizer metadata.

transformers' `convert_gguf_tokenizer` turns llama.cpp's vocabulary (SentencePiece `llama` or
byte-level BPE `gpt2`) into a `tokenizers` object without importing torch; this module adds
the BOS/EOS post-processor, the special tokens and the chat template around it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.gguf_reader import GGUFFile

log = logging.getLogger(__name__)

SUPPORTED_MODELS = ("llama", "gpt2")
CONTROL_TOKEN = 3
# Tokens that end a turn in common chat formats; generation must stop at them as well as EOS.
END_OF_TURN_TOKENS = (
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
)
SPECIAL_IDS = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


@dataclass(frozen=True)
class TokenizerInfo:
    bos_token_id: int | None
    eos_token_ids: list[int]  # EOS first, then end-of-turn tokens
    pad_token_id: int | None
    has_chat_template: bool


def _metadata_dict(gguf: GGUFFile) -> dict:
    meta = gguf.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ConversionError("missing tokenizer: the GGUF has no tokenizer.ggml.tokens")
    model = meta.get("tokenizer.ggml.model")
    if model not in SUPPORTED_MODELS:
        raise ConversionError(f"unsupported tokenizer model {model!r} (supported: llama, gpt2)")
    if model == "gpt2" and not meta.get("tokenizer.ggml.merges"):
        raise ConversionError("missing tokenizer: the GGUF's BPE vocabulary has no merges")
    entries = {
        "tokenizer_type": model,
        "pre_tokenizer_type": meta.get("tokenizer.ggml.pre"),
        "tokens": tokens,
        "add_prefix_space": meta.get("tokenizer.ggml.add_space_prefix"),
    }
    for key in ("scores", "token_type", "merges"):
        if f"tokenizer.ggml.{key}" in meta:
            entries[key] = meta[f"tokenizer.ggml.{key}"]
    if "scores" not in entries and model == "llama":
        raise ConversionError(
            "missing tokenizer: the GGUF's SentencePiece vocabulary has no scores"
        )
    return {k: v for k, v in entries.items() if v is not None}


def _token_id(gguf: GGUFFile, key: str) -> int | None:
    value = gguf.metadata.get(f"tokenizer.ggml.{key}")
    return int(value) if value is not None else None


def eos_token_ids(gguf: GGUFFile) -> list[int]:
    """EOS, then the GGUF's EOT/EOM ids and known end-of-turn control tokens it contains."""
    tokens = gguf.metadata["tokenizer.ggml.tokens"]
    types = gguf.metadata.get("tokenizer.ggml.token_type") or [CONTROL_TOKEN] * len(tokens)
    ids = [_token_id(gguf, key) for key in ("eos_token_id", "eot_token_id", "eom_token_id")]
    lookup = {token: index for index, token in enumerate(tokens) if token in END_OF_TURN_TOKENS}
    ids += [
        lookup[t] for t in END_OF_TURN_TOKENS if t in lookup and types[lookup[t]] == CONTROL_TOKEN
    ]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _post_processor(
    tokens: list[str], bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool
):
    from tokenizers import processors

    prefix = [(tokens[bos_id], bos_id)] if add_bos and bos_id is not None else []
    suffix = [(tokens[eos_id], eos_id)] if add_eos and eos_id is not None else []

    def segment(sequence: str, type_id: int) -> str:
        return " ".join(
            f"{piece}:{type_id}"
            for piece in [t for t, _ in prefix] + [sequence] + [t for t, _ in suffix]
        )

    return processors.TemplateProcessing(
        single=segment("$A", 0),
        pair=f"{segment('$A', 0)} {segment('$B', 1)}",
        special_tokens=prefix + suffix,
    )


def _use_sentencepiece_spaces(backend, add_space_prefix: bool) -> None:
    """Handle spaces as SentencePiece and llama.cpp do: every text run (the first, and each one
    after a special token) gets one "▁" prefix, even when it already starts with a space.
    `Metaspace` skips the prefix before a leading space, so " hi" would lose a token."""
    from tokenizers import decoders, normalizers

    steps = [normalizers.Prepend("\u2581")] if add_space_prefix else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    strip = [decoders.Strip(" ", 1, 0)] if add_space_prefix else []
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )


def build_backend(gguf: GGUFFile):
    """The `tokenizers.Tokenizer` the GGUF describes."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    entries = _metadata_dict(gguf)
    try:
        backend, _ = convert_gguf_tokenizer(gguf.architecture, entries)
    except (ValueError, KeyError, IndexError) as error:
        raise ConversionError(f"cannot build the tokenizer from the GGUF: {error}") from error
    if entries["tokenizer_type"] == "llama":
        _use_sentencepiece_spaces(backend, entries.get("add_prefix_space", True))
    add_bos = bool(
        gguf.metadata.get("tokenizer.ggml.add_bos_token", entries["tokenizer_type"] == "llama")
    )
    add_eos = bool(gguf.metadata.get("tokenizer.ggml.add_eos_token", False))
    backend.post_processor = _post_processor(
        entries["tokens"],
        _token_id(gguf, "bos_token_id"),
        _token_id(gguf, "eos_token_id"),
        add_bos,
        add_eos,
    )
    return backend, add_bos, add_eos


def _added_tokens_decoder(backend) -> dict[str, dict]:
    """The added tokens as transformers saves them: without this list in tokenizer_config.json,
    transformers parses the whole tokenizer.json a second time to find them (0.9 s for Gemma)."""
    return {
        str(token_id): {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
        for token_id, token in sorted(backend.get_added_tokens_decoder().items())
    }


def write_tokenizer(gguf: GGUFFile, out_dir: Path, max_length: int) -> TokenizerInfo:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and, when the GGUF
    has one, chat_template.jinja."""
    backend, add_bos, add_eos = build_backend(gguf)
    backend.save(str(out_dir / "tokenizer.json"))
    tokens = gguf.metadata["tokenizer.ggml.tokens"]
    special = {
        name: tokens[i]
        for name, key in SPECIAL_IDS.items()
        if (i := _token_id(gguf, key)) is not None and i < len(tokens)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        **special,
        "added_tokens_decoder": _added_tokens_decoder(backend),
    }
    template = gguf.metadata.get("tokenizer.chat_template")
    if template:
        (out_dir / "chat_template.jinja").write_text(template)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special, indent=2, ensure_ascii=False)
    )
    return TokenizerInfo(
        bos_token_id=_token_id(gguf, "bos_token_id"),
        eos_token_ids=eos_token_ids(gguf),
        pad_token_id=_token_id(gguf, "padding_token_id"),
        has_chat_template=bool(template),
    )
