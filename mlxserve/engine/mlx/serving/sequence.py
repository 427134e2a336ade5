"""One request's state inside the MLX runner: tokens, sampler, text, stop checks and timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxserve.engine.base import EngineRequest, GenerationEvent, GenerationStats, TokenLogprob
from mlxserve.engine.mlx.serving.constrained_sampling import OutputConstraint
from mlxserve.engine.mlx.serving.detokenizer import IncrementalDetokenizer, token_logprob
from mlxserve.engine.stops import StopStringMatcher
from mlxserve.sampling.sampler import Sampler

Emit = Callable[[GenerationEvent | BaseException], None]
FAILED = "failed"  # the stop reason of a sequence that ended with its own error

BASE_CACHE_MODEL = "model"  # the prompt cache's key for the base weights' KV state


@dataclass
class Sequence:
    request: EngineRequest
    prompt_tokens: list[int]
    max_tokens: int
    emit: Emit  # thread-safe hand-off to the request's asyncio queue
    sampler: Sampler
    detokenizer: IncrementalDetokenizer
    eos_token_ids: frozenset[int]
    constraint: OutputConstraint | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    tokens_at_cancel: int = 0  # how many tokens existed when the client left
    unsent: list[int] = field(default_factory=list)  # tokens whose text has not been emitted
    unsent_logprobs: list[TokenLogprob] = field(default_factory=list)  # theirs, when asked for
    visible_specials: dict[int, str] = field(default_factory=dict)  # shown though special
    cached_prompt_tokens: int = 0
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    stop_reason: str | None = None
    image_inputs: Any = None  # a vision model's processed images (ImageInputs)
    cache_key: list[int] | None = None  # the prompt as the prompt cache knows it, if not its ids
    embedded: Any = None  # a vision model's prompt embeddings, made at prefill
    rope_delta: int | None = None  # Qwen-VL: positions behind the token count after images
    drafter: Any = None  # a speculative.Drafter when the sequence decodes speculatively
    adapter_generation: int = 0  # which load of its adapter: a reloaded one may differ
    # The step that gave it its last token (chosen on the device ahead of the host) had already
    # read that token into its cache.
    last_token_read: bool = False

    def __post_init__(self):
        self.stops = StopStringMatcher(self.request.stop)

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def failed(self) -> bool:
        return self.stop_reason == FAILED

    def fail(self, exc: Exception) -> None:
        """End this sequence alone with `exc` (its request's error); the batch goes on."""
        self.stop_reason = FAILED
        self.emit(exc)

    @property
    def longest_tokens(self) -> int:
        """The most tokens its cache can come to hold: its prompt and its longest reply."""
        return len(self.prompt_tokens) + self.max_tokens

    @property
    def last_token(self) -> int:
        return self.generated[-1]

    @property
    def adapter(self) -> str | None:
        return self.request.adapter

    @property
    def cache_model(self) -> str:
        """Whose weights made this sequence's KV state: an adapter's never serves another."""
        adapter = self.adapter
        return BASE_CACHE_MODEL if adapter is None else f"model@{adapter}#{self.adapter_generation}"

    @property
    def prompt_key(self) -> list[int]:
        return self.prompt_tokens if self.cache_key is None else self.cache_key

    @property
    def processed_key(self) -> list[int]:
        """The cache key of the tokens whose keys and values are in the cache (the last sampled
        one is not yet, unless a step ahead read it)."""
        return self.prompt_key + (self.generated if self.last_token_read else self.generated[:-1])

    def cancel(self) -> None:
        """The client left (called from the event loop): the runner drops the sequence before
        its next step."""
        if not self.finished and not self.cancelled.is_set():
            self.tokens_at_cancel = len(self.generated)
            self.cancelled.set()

    @property
    def tokens_after_cancel(self) -> int:
        return len(self.generated) - self.tokens_at_cancel

    def next_mask(self):
        """The grammar's allowed tokens for the next step (None when unconstrained)."""
        return self.constraint.next_mask() if self.constraint else None

    def sample(self, logits, mask) -> int:
        """The next token from this row's logits; its log-probabilities are kept for its event
        when the request asks for them."""
        top = self.request.top_logprobs
        if top is None:
            return self.sampler.sample(logits, mask)
        token, logprob, alternatives = self.sampler.sample_with_logprobs(logits, mask, top)
        tokenizer = self.detokenizer.tokenizer
        self.unsent_logprobs.append(token_logprob(tokenizer, token, logprob, alternatives))
        return token

    def accept(self, token: int) -> None:
        """Record a sampled token, emit its text, and decide whether the sequence ends here."""
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        self.generated.append(token)
        self.unsent.append(token)
        if token in self.eos_token_ids:
            self.stop_reason = "eosFound"
            return
        piece = self.visible_specials.get(token) or self.detokenizer.add(token)
        text = self.stops.feed(piece)
        complete = self.constraint is not None and not self.constraint.accept(token, piece)
        if self.stops.stopped:
            self.stop_reason = "stopStringFound"
        elif complete:
            self.stop_reason = "eosFound"  # the grammar allows nothing more: a natural end
        elif len(self.generated) >= self.max_tokens:
            self.stop_reason = "maxPredictedTokensReached"
        if text:  # a token with no text yet (part of a character) goes with the next event
            self._emit_unsent(text)

    def _emit_unsent(self, text: str, stats: GenerationStats | None = None) -> None:
        self.emit(GenerationEvent(text, self.unsent, stats, self.unsent_logprobs))
        self.unsent, self.unsent_logprobs = [], []

    def finish(self) -> None:
        """Send the held-back text and the final event with exact counts and timings."""
        tail = self.stops.flush()
        if tail:
            self.emit(GenerationEvent(text=tail))
        self._emit_unsent("", self.stats())

    def stats(self) -> GenerationStats:
        return GenerationStats(
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=len(self.generated),
            cached_prompt_tokens=self.cached_prompt_tokens,
            time_to_first_token=self.first_token_at - self.request.arrived,
            generation_time=self.last_token_at - self.first_token_at,
            stop_reason=self.stop_reason or "maxPredictedTokensReached",
            stop_string=self.stops.matched,
            draft=self.drafter.counts if self.drafter else None,
            draft_model=self.request.speculation.draft_model if self.drafter else None,
        )
