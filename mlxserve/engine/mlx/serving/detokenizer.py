"""Incremental detokenization that works for any tokenizer, one instance per sequence."""

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Decodes the last emitted chunk together with the new tokens: the left context keeps
    SentencePiece/BPE spacing right, and a trailing partial UTF-8 character is held back."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
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
        return self._tokenizer.decode(tokens, skip_special_tokens=True) if tokens else ""
