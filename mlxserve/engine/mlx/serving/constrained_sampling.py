"""Grammar-constrained sampling on the MLX engine, with llguidance.

Each model gets one GrammarCompiler: llguidance's view of its tokenizer (about 2.8 s to build for
a 262,144-token vocabulary, made by the first constrained request) and compiled grammars kept
by their text, so a repeated schema is a copy, not a compile. Each constrained sequence gets an
OutputConstraint: the token mask for its next step, filled in place, and the matcher that
advances with every sampled token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.hf import from_tokenizer

from mlxserve.engine.base import Grammar, InvalidRequest

log = logging.getLogger(__name__)

COMPILED_GRAMMARS = 64


def _llguidance_view(hf_tokenizer, vocab_size: int, eos_token_ids: list[int]) -> LLTokenizer:
    """llguidance.hf.from_tokenizer first copies the Rust tokenizer to switch off padding and
    truncation, a serialize-and-parse (1.5 s for Gemma's vocabulary); one without either is
    serialized as it is."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None or backend.padding is not None or backend.truncation is not None:
        return from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=eos_token_ids)
    return LLTokenizer(backend.to_str(), n_vocab=vocab_size, eos_token=eos_token_ids)


class GrammarCompiler:
    def __init__(self, hf_tokenizer, vocab_size: int, eos_token_ids: list[int]):
        self.vocab_size = vocab_size
        self._tokenizer: Future[LLTokenizer] = Future()
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        args = (hf_tokenizer, vocab_size, eos_token_ids)
        threading.Thread(target=self._build, args=args, daemon=True).start()

    def _build(self, hf_tokenizer, vocab_size: int, eos_token_ids: list[int]) -> None:
        try:
            self._tokenizer.set_result(_llguidance_view(hf_tokenizer, vocab_size, eos_token_ids))
        except Exception as exc:  # noqa: BLE001 - reported to every constrained request
            message = f"this model's tokenizer cannot be used for constrained output: {exc}"
            self._tokenizer.set_exception(InvalidRequest(message))

    @property
    def tokenizer(self) -> LLTokenizer:
        return self._tokenizer.result()

    def matcher(self, lark: str, cached: bool = True) -> LLMatcher:
        """A fresh matcher at the grammar's start; called off the event loop (it may wait for
        the tokenizer, or compile). `cached=False` for a grammar that holds a reply's text."""
        with self._lock:
            template = self._compiled.get(lark)
            if template is not None:
                self._compiled.move_to_end(lark)
                return template.deep_copy()
        template = LLMatcher(self.tokenizer, lark, log_level=0)
        if template.is_error():
            raise InvalidRequest(f"the grammar cannot be compiled: {template.get_error()}")
        if not cached:
            return template
        with self._lock:
            self._compiled[lark] = template
            while len(self._compiled) > COMPILED_GRAMMARS:
                self._compiled.popitem(last=False)
        return template.deep_copy()

    def new_constraint(self, grammar: Grammar) -> OutputConstraint:
        """Compiled here, off the runner thread, lazy grammars too: their trigger then costs
        the runner a copy, not a compile."""
        matcher = self.matcher(grammar.lark)
        return OutputConstraint(self, grammar.lark, grammar.trigger, matcher)


class OutputConstraint:
    """One sequence's grammar. With a trigger the matcher starts only once the generated text
    holds it: the grammar then covers the tokens from the one where the trigger began."""

    def __init__(
        self, compiler: GrammarCompiler, lark: str, trigger: str | None, matcher: LLMatcher
    ):
        self._compiler = compiler
        self._lark, self._trigger = lark, trigger
        # A lazy grammar's matcher waits in _lazy for its trigger; None once it has started.
        self._lazy, self.matcher = (matcher, None) if trigger is not None else (None, matcher)
        self.mask = np.zeros((compiler.vocab_size + 31) // 32, dtype=np.int32)
        self._tokens: list[int] = []  # generated before the trigger
        self._pieces: list[str] = []  # their text, as the output shows it (specials included)
        self._recent = ""  # the tail of the text, where a trigger may be forming

    def next_mask(self) -> np.ndarray | None:
        """The allowed tokens for the next step, or None while the output is free."""
        if self.matcher is None:
            return None
        self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        return self.mask

    def accept(self, token: int, text: str) -> bool:
        """Advance with a sampled token; False once the grammar is complete (nothing can follow)."""
        if self.matcher is not None:
            self.matcher.consume_token(token)
            return not self.matcher.is_stopped()
        if self._lazy is None:
            return True
        self._tokens.append(token)
        self._pieces.append(text)
        self._recent = (self._recent + text)[-4 * len(self._trigger) :]
        if self._trigger in self._recent:
            self._start_lazily()
        return True

    def _start_lazily(self) -> None:
        """Start the grammar at the token where the trigger begins (the text that token shows
        before the trigger written into the grammar ahead of it). Found by the tokens' shown
        text, since a trigger may begin with a special token, which has no bytes of its own."""
        text = "".join(self._pieces)
        at, start, offset = text.rfind(self._trigger), 0, 0
        for index, piece in enumerate(self._pieces):
            if offset + len(piece) > at:
                start = index
                break
            offset += len(piece)
        before, matcher = text[offset:at], self._lazy
        if before:  # rare: the trigger begins inside a token; this grammar is the reply's own
            lark = f"start: {json.dumps(before)} triggered\n" + self._lark.replace(
                "start:", "triggered:", 1
            )
            matcher = self._compiler.matcher(lark, cached=False)
        if matcher.consume_tokens(self._tokens[start:]) and not matcher.is_error():
            self.matcher = matcher
        else:
            log.warning("the output left the grammar at its trigger; it stays unconstrained")
        self._tokens, self._pieces, self._lazy = [], [], None
