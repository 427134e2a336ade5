"""Speculative decoding for a sequence that decodes alone: draft a few tokens cheaply, run them
all through the model in one forward pass, and keep those the model itself would have chosen.

Drafts come from the sequence's own tokens (prompt lookup: what followed the latest earlier
occurrence of its last few tokens) or from a small draft model with the same vocabulary. The
sequence's own sampler picks every position in order, with the grammar mask of that position,
so the output is token for token what plain decoding gives (the same seed included): drafts
only decide how many positions one forward pass covers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlx.core as mx

from mlxserve.engine.base import DraftCounts
from mlxserve.engine.mlx.architectures.text_model import TextModel, logits_as_numpy

log = logging.getLogger(__name__)

# Drafted tokens checked per forward pass. Measured on Gemma 3 270M (MLX, CPU): a pass over 9
# positions costs 1.4 single-token steps, so a fully accepted draft gives 6x.
MAX_DRAFT_TOKENS = 8
LOOKUP_NGRAMS = (3, 2)  # the longest match first: longer contexts predict better
MAX_PAUSE = 16  # plain steps, at most, between two drafts after wholly rejected ones


class DraftSources:
    """Where a runner's sequences take their drafts from: the draft model a request names
    (loaded on first use, on the runner's thread), else the prompt when lookup is asked for
    or is the server's default."""

    def __init__(self, prompt_lookup: bool, chunk: int):
        self.prompt_lookup = prompt_lookup  # for requests that do not say
        self.chunk = chunk  # the tokens a draft model reads its context in
        self._models: dict[str, TextModel | None] = {}  # by directory

    def drafter_for(self, sequence) -> Drafter | None:
        speculation = sequence.request.speculation
        if sequence.adapter is not None:
            return None  # a draft's check and rewind run the base weights alone
        if speculation.draft_path is not None:
            model = self._model(speculation.draft_path)
            return Drafter(DraftModelDrafter(model, self.chunk)) if model else None
        lookup = speculation.prompt_lookup
        if lookup or (lookup is None and self.prompt_lookup):
            return Drafter(PromptLookup())
        return None

    def _model(self, directory: str) -> TextModel | None:
        """None (no drafts) for a model whose recurrent state could not be taken back after a
        rejected draft."""
        if directory not in self._models:
            from mlx_lm.utils import load_model

            # The weights alone: drafts are token ids, and a tokenizer would cost seconds to
            # load (262,144 tokens for Gemma) while every stream waits for this step.
            model = TextModel(load_model(Path(directory))[0])
            if not model.per_token_cache:
                log.warning(
                    "%s keeps recurrent state: it cannot draft, replies decode plainly", directory
                )
                model = None
            self._models[directory] = model
        return self._models[directory]


def propose_drafts(sequence) -> list[int]:
    # A draft beyond the tokens the sequence may still produce could never be used.
    room = sequence.max_tokens - len(sequence.generated) - 1
    return sequence.drafter.propose(sequence.prompt_tokens + sequence.generated, room)


class Drafter:
    """A sequence's speculative decoding: where its drafts come from, how long the next may be,
    and the counts its stats report. A draft grows while the model accepts it and shrinks to
    what was accepted when it does not; after a wholly rejected draft, drafting pauses for a
    number of steps that doubles each time, as a rejected draft costs more than a plain step."""

    def __init__(self, source):
        self.source = source  # PromptLookup or DraftModelDrafter
        self.counts = DraftCounts()
        self._limit = MAX_DRAFT_TOKENS
        self._pause = 0
        self._skip = 0

    def propose(self, context: list[int], room: int) -> list[int]:
        """Drafts for the tokens after `context`; `room` is how many the sequence may still
        produce after the next."""
        if self._skip:
            self._skip -= 1
            return []
        limit = min(self._limit, room)
        return self.source.propose(context, limit) if limit > 0 else []

    def checked(self, drafted: int, accepted: int) -> None:
        self.source.accepted(accepted)
        self.counts.record(drafted, accepted)
        if accepted == drafted:
            self._limit = min(MAX_DRAFT_TOKENS, 2 * self._limit)
            self._pause = 0
            return
        self._limit = accepted + 1
        if accepted == 0:
            self._pause = min(MAX_PAUSE, 2 * self._pause or 1)
            self._skip = self._pause


class PromptLookup:
    """Drafts from the sequence's own context. An index of n-grams, kept up to date a token at a
    time, makes each lookup a dictionary read however long the context is."""

    def __init__(self):
        self._indexed = 0  # context positions whose preceding n-grams are in the index
        # n-gram -> the position just past its latest occurrence that has a token after it
        self._follower: dict[tuple[int, ...], int] = {}

    def propose(self, context: list[int], limit: int) -> list[int]:
        for follower in range(max(self._indexed, 1), len(context)):
            for n in LOOKUP_NGRAMS:
                if follower >= n:
                    self._follower[tuple(context[follower - n : follower])] = follower
        self._indexed = len(context)
        for n in LOOKUP_NGRAMS:
            position = self._follower.get(tuple(context[-n:]))
            if position is not None:
                return context[position : position + limit]
        return []

    def accepted(self, count: int) -> None:
        """Nothing to undo: the index only ever holds tokens of the context."""


class DraftModelDrafter:
    """Drafts greedily with a small model of the same vocabulary, from its own cache of the
    sequence's context (read a chunk at a time the first time)."""

    def __init__(self, model, chunk: int):
        self.model = model  # a runner TextModel
        self.cache = model.make_cache()
        self._chunk = chunk
        self._fed = 0  # context tokens whose keys and values are in the draft cache
        self._pass: tuple[Rewind, list[int], int] | None = None

    def propose(self, context: list[int], limit: int) -> list[int]:
        pending = context[self._fed :]
        while len(pending) > self._chunk:
            self._forward(pending[: self._chunk])
            mx.eval([layer.state for layer in self.cache])
            self._fed += self._chunk
            pending = pending[self._chunk :]
        rewind, appended = Rewind(self.cache), list(pending)
        drafts = [self._greedy(pending)]
        while len(drafts) < limit:
            appended.append(drafts[-1])
            drafts.append(self._greedy([drafts[-1]]))
        self._pass = (rewind, appended, len(pending))
        return drafts

    def accepted(self, count: int) -> None:
        """Keep the context's state and that of the drafts the model accepted (the last draft
        was never fed); the next proposal feeds the sequence's new tokens from there."""
        rewind, appended, context_part = self._pass
        keep = min(context_part + count, len(appended))
        rewind.keep(self.model, appended, keep)
        self._fed += keep

    def _greedy(self, tokens: list[int]) -> int:
        return int(mx.argmax(self._forward(tokens)[0, -1]).item())

    def _forward(self, tokens: list[int]) -> mx.array:
        return self.model.decode(mx.array([tokens]), self.cache, [])


def check_drafts(model, cache: list, sequence, drafts: list[int]) -> int:
    """One forward pass of a sequence decoding alone over its last token and the drafts. The
    sampler takes the positions in order and stops at the first token that differs from its
    draft, so every token is the one a plain step would have given; the cache keeps only what
    was produced. Returns the number of tokens sampled."""
    appended = [sequence.last_token, *drafts]
    rewind = Rewind(cache)
    logits = model.decode(mx.array([appended]), cache, [sequence])[0]
    mx.async_eval(logits)
    mask = sequence.next_mask()  # computed while MLX evaluates the logits
    logits = logits_as_numpy(logits)
    accepted = 0
    for position in range(len(appended)):
        token = sequence.sampler.sample(logits[position], mask)
        sequence.accept(token)
        matched = position < len(drafts) and token == drafts[position]
        accepted += matched
        if sequence.finished or not matched:
            break
        mask = sequence.next_mask()
    rewind.keep(model, appended, position + 1)
    sequence.drafter.checked(len(drafts), accepted)
    return position + 1


class Rewind:
    """Takes a model cache back to fewer of the positions a forward pass added. Most layers are
    simply trimmed. A sliding-window layer whose window was full drops its oldest positions as
    new ones arrive, which trimming cannot bring back: its state (window-sized) is copied before
    the pass and put back after it, the other layers are trimmed to the same point, and the
    positions to keep are read again."""

    def __init__(self, cache: list):
        self.cache = cache
        self._windowed = {
            index: _copy_state(layer.state)
            for index, layer in enumerate(cache)
            if hasattr(layer, "max_size")
        }

    def keep(self, model, appended: list[int], keep: int) -> None:
        """After a pass that added `appended`, keep the state of its first `keep` tokens."""
        if keep >= len(appended):
            return
        if all(layer.is_trimmable() for layer in self.cache):
            for layer in self.cache:
                layer.trim(len(appended) - keep)
            return
        for index, layer in enumerate(self.cache):
            if index in self._windowed:
                layer.state = self._windowed[index]
            else:
                layer.trim(len(appended))
        if keep:
            model.decode(mx.array([appended[:keep]]), self.cache, [])
        mx.eval([layer.state for layer in self.cache])


def _copy_state(state: tuple) -> tuple:
    """A layer's state as it is now, safe from the layer's later in-place updates."""
    return tuple(mx.array(item) if isinstance(item, mx.array) else item for item in state)
