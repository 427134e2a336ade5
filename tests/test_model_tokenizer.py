"""The MLX engine's tokenizer, read once from a model directory: the model's end tokens, and
each token's bytes (what logprobs report) spelled from its piece the vocabulary's way, so that
a reply's tokens add up to its UTF-8 text, on Gemma's SentencePiece vocabulary and on a
byte-level BPE one."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_lm.utils import load_tokenizer as mlx_lm_tokenizer

from mlxserve.engine.mlx.serving.detokenizer import token_bytes
from mlxserve.engine.mlx.tokenizer import Pieces, load_tokenizer
from mlxserve.models.store import find_model
from tests.tiny_models import make_tiny_gemma

# Spaces before words, letters of two and three UTF-8 bytes and an emoji Gemma spells in bytes.
TEXT = "Hello wörld, 日本語 \U0001fae8 and\ttabs  twice"
GEMMA_ENDS = {1, 106}  # <eos> and <end_of_turn>, as Gemma 3's config.json names them


def spelled(tokenizer, text: str) -> bytes:
    return b"".join(
        token_bytes(tokenizer, t) for t in tokenizer.encode(text, add_special_tokens=False)
    )


def test_gemma_tokens_spell_the_text_and_end_as_the_model_does(models_dir, twin_ids):
    path = Path(find_model(models_dir, twin_ids["mlx"]).directory)
    tokenizer = load_tokenizer(path)
    assert tokenizer.pieces is Pieces.SENTENCEPIECE
    assert tokenizer.eos_token_ids == GEMMA_ENDS
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert any(tokenizer.convert_ids_to_tokens(t).startswith("<0x") for t in ids)  # byte pieces
    assert spelled(tokenizer, TEXT) == TEXT.encode()
    # What mlx-lm's own loader reads from the same folder.
    reference = mlx_lm_tokenizer(path, eos_token_ids=sorted(GEMMA_ENDS))
    assert tokenizer.encode(TEXT) == reference.encode(TEXT)
    assert tokenizer.decode(ids) == reference.decode(ids) == TEXT
    assert tokenizer.chat_template == reference.chat_template
    assert tokenizer.eos_token_ids == reference.eos_token_ids


def test_byte_level_tokens_spell_the_text_byte_by_byte(tmp_path):
    record = make_tiny_gemma(tmp_path / "test" / "bytes", bytes_vocabulary=True)
    tokenizer = load_tokenizer(Path(record.path))
    assert tokenizer.pieces is Pieces.BYTE_LEVEL
    assert tokenizer.eos_token_ids == {2}  # the tiny config's
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) == len(TEXT.encode())  # one token a byte: most are part of a character
    assert spelled(tokenizer, TEXT) == TEXT.encode()


def test_a_word_vocabulary_spells_each_token_as_it_decodes(tmp_path):
    record = make_tiny_gemma(tmp_path / "test" / "words")
    tokenizer = load_tokenizer(Path(record.path))
    assert tokenizer.pieces is Pieces.OTHER
    assert token_bytes(tokenizer, 10) == tokenizer.decode([10]).encode() == b"w6"


def test_a_checkpoint_without_end_tokens_takes_its_architectures(tmp_path):
    """mlx-lm names end tokens in some architectures' modules (Muse Spark's) for checkpoints
    whose config.json has none; they end its replies here too."""
    from mlx_lm.models import muse_spark

    record = make_tiny_gemma(tmp_path / "test" / "words")
    path = Path(record.path)
    (path / "config.json").write_text(json.dumps({"model_type": "muse_spark"}))
    named = set(muse_spark.TOKENIZER_DEFAULTS["eos_token_ids"])
    assert named and load_tokenizer(path).eos_token_ids >= named
