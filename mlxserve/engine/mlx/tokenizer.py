"""The tokenizer an MLX model serves with: Hugging Face's, read once, with the model's end
tokens and how its pieces spell bytes. mlx-lm's loader also parses tokenizer.json again as
JSON and maps the whole vocabulary for its own streaming decoder and markers: seconds for a
262k-token vocabulary that this server (serving/detokenizer.py, families/) never reads."""

from __future__ import annotations

import enum
import importlib
import json
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer

SPM_SPACE = "\u2581"


class Pieces(enum.Enum):
    """How a vocabulary's pieces spell their bytes."""

    BYTE_LEVEL = "byte-level"  # GPT-2's printable stand-ins for bytes
    SENTENCEPIECE = "sentencepiece"  # "▁" for a space, <0xNN> for a lone byte
    OTHER = "other"  # only the tokenizer's decode knows


class ModelTokenizer:
    """Hugging Face's tokenizer (every other attribute is its), with the end tokens the model's
    config names added to the tokenizer's own."""

    def __init__(self, hf_tokenizer, eos_token_ids: Iterable[int], pieces: Pieces):
        self._tokenizer = hf_tokenizer
        self.eos_token_ids = set(eos_token_ids)
        if hf_tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(hf_tokenizer.eos_token_id)
        self.pieces = pieces

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


def load_tokenizer(path: Path, hf_tokenizer=None) -> ModelTokenizer:
    """The tokenizer in the model directory `path`, with the end tokens of its config.json;
    `hf_tokenizer`: one already read from there (a vision model's processor holds one)."""
    hf_tokenizer = hf_tokenizer or AutoTokenizer.from_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    eos = config.get("eos_token_id")
    eos_ids = _module_end_tokens(config) if eos is None else [eos] if isinstance(eos, int) else eos
    return ModelTokenizer(hf_tokenizer, eos_ids, _pieces(hf_tokenizer))


def _module_end_tokens(config: dict) -> list[int]:
    """The end tokens mlx-lm's module for the architecture names for checkpoints whose config
    has none (its TOKENIZER_DEFAULTS), as mlx-lm's own loader takes them."""
    from mlx_lm.utils import _get_classes

    try:
        model_class, _ = _get_classes(config)
    except (KeyError, ValueError):
        return []
    defaults = getattr(importlib.import_module(model_class.__module__), "TOKENIZER_DEFAULTS", {})
    return list(defaults.get("eos_token_ids", []))


def _pieces(hf_tokenizer) -> Pieces:
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    decoder = None if backend is None else backend.decoder
    if decoder is None:
        return Pieces.OTHER
    # A decoder pickles as its JSON: the one part of tokenizer.json read here.
    described = json.loads(decoder.__getstate__())
    steps = described["decoders"] if described["type"] == "Sequence" else [described]
    kinds = {step.get("type") for step in steps}
    if "ByteLevel" in kinds:
        return Pieces.BYTE_LEVEL
    spaces = any(step.get("pattern", {}).get("String") == SPM_SPACE for step in steps)
    if "Metaspace" in kinds or (spaces and "ByteFallback" in kinds):
        return Pieces.SENTENCEPIECE
    return Pieces.OTHER
