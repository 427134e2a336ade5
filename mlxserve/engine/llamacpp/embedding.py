"""Fitting embedding inputs into a llama.cpp model's window, which llama.cpp itself would refuse
past its length: cut the way sentence-transformers truncates, keeping the closing [SEP]."""

from __future__ import annotations

# Every token covers at least one UTF-8 byte (WordPiece, byte-level BPE, SentencePiece with byte
# fallback), so text this far under the window fits without asking the tokenizer.
SPECIAL_TOKEN_ROOM = 8


async def fit_to_window(model, item: str | list[int]) -> str | list[int]:
    """The input itself when it fits `model.context_length`, else its first tokens."""
    window = model.context_length
    if isinstance(item, list):
        return item[:window]
    if len(item.encode()) + SPECIAL_TOKEN_ROOM <= window:
        return item
    tokens = await model.tokenize(item)
    if len(tokens) <= window:
        return tokens
    plain = await model.tokenize(item, add_special_tokens=False)
    closing = max(len(tokens) - len(plain) - _leading_specials(tokens, plain), 0)
    return tokens[: window - closing] + tokens[len(tokens) - closing :]


def _leading_specials(tokens: list[int], plain: list[int]) -> int:
    """How many special tokens the tokenizer put before the text's own."""
    head = plain[:8]
    return next((i for i in range(4) if tokens[i : i + len(head)] == head), 0)
