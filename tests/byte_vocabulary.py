"""A vocabulary of one token per byte, so that llguidance can tell whether a grammar allows a
text (any text is a token sequence): grammars are checked with llguidance itself."""

from __future__ import annotations

from pathlib import Path

from llguidance import LLMatcher, LLTokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def byte_vocabulary(directory: Path) -> LLTokenizer:
    pieces = ["<eos>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    tokenizer = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, [], unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<eos>"])
    tokenizer.save(str(directory / "tokenizer.json"))
    return LLTokenizer(str(directory / "tokenizer.json"), eos_token=0)


def matches(vocabulary: LLTokenizer, lark: str, text: str) -> bool:
    """Whether the grammar (which must compile) allows exactly `text`."""
    matcher = LLMatcher(vocabulary, lark, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    tokens = vocabulary.tokenize_str(text)
    if matcher.validate_tokens(tokens) < len(tokens):
        return False
    matcher.consume_tokens(tokens)
    return matcher.is_accepting()
