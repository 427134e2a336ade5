"""Incremental detokenization that works for any tokenizer, one instance per sequence; and each
token's own bytes, as logprobs report them."""

import re
from functools import cache

from mlxserve.engine.base import TokenLogprob
from mlxserve.engine.mlx.tokenizer import SPM_SPACE, ModelTokenizer, Pieces

REPLACEMENT_CHAR = "\ufffd"
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback


@cache
def _bpe_byte_values() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for bytes, as GPT-2 chose them."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    stand_ins, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_ins[chr(byte)] = byte
        else:
            stand_ins[chr(256 + extra)] = byte
            extra += 1
    return stand_ins


def token_bytes(tokenizer: ModelTokenizer, token_id: int) -> bytes:
    """The bytes a token adds to the text (part of a UTF-8 character, at times)."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if tokenizer.pieces is Pieces.BYTE_LEVEL:
        values = _bpe_byte_values()
        if all(char in values for char in piece):
            return bytes(values[char] for char in piece)
    elif (byte := BYTE_TOKEN.fullmatch(piece)) is not None:
        return bytes([int(byte.group(1), 16)])
    elif tokenizer.pieces is Pieces.SENTENCEPIECE:
        return piece.replace(SPM_SPACE, " ").encode()
    return tokenizer.decode([token_id]).encode()


def token_logprob(
    tokenizer: ModelTokenizer, token_id: int, logprob: float | None, top=()
) -> TokenLogprob:
    raw = token_bytes(tokenizer, token_id)
    alternatives = tuple(token_logprob(tokenizer, i, value) for i, value in top)
    return TokenLogprob(raw.decode("utf-8", "replace"), raw, logprob, alternatives)


class IncrementalDetokenizer:
    """Decodes the last emitted chunk together with the new tokens: the left context keeps
    SentencePiece/BPE spacing right, and a trailing partial UTF-8 character is held back."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._tokens: list[int] = []
        self._prefix_offset = 0  # start of the context window
        self._read_offset = 0  # tokens before this have been emitted as text

    def add(self, token: int) -> str:
        """Append a token and return the new text it completes ('' while a character is partial)."""
        self._tokens.append(token)
        prefix_text = self._decode(self._tokens[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._tokens[self._prefix_offset :])
        if full_text.endswith(REPLACEMENT_CHAR) or len(full_text) <= len(prefix_text):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._tokens)
        return full_text[len(prefix_text) :]

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True) if tokens else ""
