"""Jump-forward: the fixed text a grammar opens with goes into the prompt, not through sampling.

A forced tool call opens with text the grammar allows one way only: the family's marker, the
tool's name, its first parameter's name. llama.cpp samples each of those tokens without the
grammar first, finds it refused, and samples again under it (about 1 ms a token more on a
262,144-token vocabulary, besides the decode step). Appended to the prompt instead, they cost
part of one prefill, and the child's grammar starts where they end: the same rules, with the
fixed text taken off the front of its start rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mlxserve.engine.base import EngineRequest, Grammar
from mlxserve.engine.jump import JumpForward, may_jump, writes_what_it_may_not

SPECIAL = re.compile(r"<\[(\d+)\]>")
RULE_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): ?(.*)")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUANTIFIER = re.compile(r"[?*+]|\{\d*(,\d*)?\}")
KNOWN_TEXTS = 256  # openings kept as tokens; past this many the list starts again


@dataclass(frozen=True)
class ForcedStart:
    """What a grammar allows one way only at its start: text and special token ids in order
    (adjacent text joined); `rules` and `items` make the grammar of what follows them."""

    pieces: tuple[str | int, ...]
    rules: dict[str, str]
    items: tuple[str, ...]

    def rest(self, tail: str = "") -> Grammar:
        """The grammar after the pieces; `tail`, the end of the last one, which the model then
        writes itself, first."""
        opening = (json.dumps(tail, ensure_ascii=False),) if tail else ()
        rules = {**self.rules, "start": " ".join((*opening, *self.items))}
        return Grammar("".join(f"{name}: {body}\n" for name, body in rules.items()))


def forced_start(grammar: Grammar) -> ForcedStart | None:
    """The grammar's fixed opening, where its start rule opens with literals, special tokens
    or rules that are one sequence; None where it has none, is lazy, or holds more than the
    Lark this server writes."""
    rules = _rules(grammar.lark) if grammar.trigger is None else None
    items = _items(rules["start"]) if rules and "start" in rules else None
    pieces: list[str | int] = []
    while items:
        head, special = items[0], SPECIAL.fullmatch(items[0])
        if special:
            pieces.append(int(special.group(1)))
        elif head.startswith('"') and (text := _literal(head)) is not None:
            if text:
                pieces.append(text)
        elif head[0].islower() and head in rules and (body := _items(rules[head])) is not None:
            items = body + items[1:]
            continue
        else:
            break
        items = items[1:]
    if not pieces or not items:
        return None
    return ForcedStart(tuple(_joined(pieces)), rules, tuple(items))


def _rules(lark: str) -> dict[str, str] | None:
    rules = {}
    for line in lark.splitlines():
        found = RULE_LINE.fullmatch(line)
        if not found or found.group(1) in rules:
            return None
        rules[found.group(1)] = found.group(2)
    return rules


def _items(body: str) -> list[str] | None:
    """A rule body's top-level items, each with its quantifier; None for a choice (`|`) or
    anything this reader does not know."""
    items, at = [], 0
    while at < len(body):
        if body[at].isspace():
            at += 1
            continue
        end = _primary_end(body, at)
        if end is None:
            return None
        quantifier = QUANTIFIER.match(body, end)
        end = quantifier.end() if quantifier else end
        items.append(body[at:end])
        at = end
    return items


def _primary_end(body: str, at: int) -> int | None:
    """Where the item starting at `at` ends: a literal, a special token, a rule or terminal
    name, an inline JSON schema or a bracketed group."""
    char = body[at]
    if char == '"':
        return _quoted_end(body, at)
    if special := SPECIAL.match(body, at):
        return special.end()
    if name := NAME.match(body, at):
        return name.end()
    if body.startswith("%json", at):
        start = body.find("{", at)
        return _nested_end(body, start, "{", "}") if start >= 0 else None
    if char == "(":
        return _nested_end(body, at, "(", ")")
    return None


def _quoted_end(body: str, at: int) -> int | None:
    index = at + 1
    while index < len(body):
        if body[index] == "\\":
            index += 2
        elif body[index] == '"':
            return index + 1
        else:
            index += 1
    return None


def _nested_end(body: str, at: int, opening: str, closing: str) -> int | None:
    depth, index = 0, at
    while index < len(body):
        char = body[index]
        if char == '"':
            end = _quoted_end(body, index)
            if end is None:
                return None
            index = end
            continue
        depth += (char == opening) - (char == closing)
        index += 1
        if depth == 0:
            return index
    return None


def _literal(item: str) -> str | None:
    try:
        text = json.loads(item)
    except ValueError:
        return None
    return text if isinstance(text, str) else None


def _joined(pieces: list[str | int]) -> list[str | int]:
    joined: list[str | int] = []
    for piece in pieces:
        if isinstance(piece, str) and joined and isinstance(joined[-1], str):
            joined[-1] += piece
        else:
            joined.append(piece)
    return joined


class ExactTokens:
    """Text as the model's tokens that read back as exactly it, and how many characters all but
    the last token spell; None where they do not. Kept per text, as forced calls repeat their
    openings."""

    def __init__(
        self,
        tokenize: Callable[[str], Awaitable[list[int]]],
        detokenize: Callable[[list[int]], Awaitable[str]],
    ):
        self._tokenize, self._detokenize = tokenize, detokenize
        self._known: dict[str, tuple[list[int], int] | None] = {}

    async def __call__(self, text: str) -> tuple[list[int], int] | None:
        if text not in self._known:
            tokens = await self._tokenize(text)
            whole = bool(tokens) and await self._detokenize(tokens) == text
            head = await self._detokenize(tokens[:-1]) if whole and len(tokens) > 1 else ""
            if len(self._known) >= KNOWN_TEXTS:
                self._known.clear()
            self._known[text] = (tokens, len(head)) if whole and text.startswith(head) else None
        return self._known[text]


async def planned_jump(
    request: EngineRequest,
    n_predict: int,
    visible: dict[int, str],
    text_tokens: Callable[[str], Awaitable[tuple[list[int], int] | None]],
) -> JumpForward | None:
    """The jump for a request whose grammar opens with fixed text; `visible`: the special
    tokens whose text the client sees; `text_tokens`: text as the model's tokens, exactly, and
    how much of it all but the last token spell, or None. The last token of closing text is
    left to the model, which may write it together with what follows (`": {"` as one token,
    where `": "` alone would end in a lone space)."""
    if not may_jump(request):
        return None
    start = forced_start(request.grammar)
    if start is None:
        return None
    tokens, text, tail = [], "", ""
    for index, piece in enumerate(start.pieces):
        if isinstance(piece, int):
            tokens.append(piece)
            text += visible.get(piece, "")
            continue
        if (spelled := await text_tokens(piece)) is None:
            return None
        if index < len(start.pieces) - 1:
            tokens, text = tokens + spelled[0], text + piece
        else:
            head = spelled[1]
            tokens, text, tail = tokens + spelled[0][:-1], text + piece[:head], piece[head:]
    if not tokens or len(tokens) >= n_predict or writes_what_it_may_not(tokens, text, request):
        return None
    return JumpForward(tokens, text, start.rest(tail))
