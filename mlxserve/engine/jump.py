"""Jump-forward, on both engines: the tokens a grammar allows one way only at the start of a
reply (a forced call's marker, the tool's name, the first parameter's name) are read with the
prompt, in its prefill, instead of being sampled one decode step each."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mlxserve.engine.base import EngineRequest, GenerationEvent, GenerationStats, Grammar
from mlxserve.sampling.params import BANNED_BIAS


def may_jump(request: EngineRequest) -> bool:
    """Whether a request's forced start may be read with its prompt: not with images (their
    prompt is not only tokens), nor with log-probabilities (the jumped tokens would have none),
    nor with presence or frequency penalties (they count sampled tokens only)."""
    grammar, sampling = request.grammar, request.sampling
    return (
        grammar is not None
        and grammar.trigger is None
        and not request.images
        and request.top_logprobs is None
        and not sampling.presence_penalty
        and not sampling.frequency_penalty
    )


@dataclass(frozen=True)
class JumpForward:
    """A forced start in the model's tokens: put after the prompt, and given to the client as
    the reply's first text. Its tokens count in the completion, not in the prompt, and not in
    the decode rate (they came with the prompt's prefill). `rest`: the grammar after them, for
    an engine whose grammar cannot be told they were read."""

    tokens: list[int]
    text: str
    rest: Grammar | None = None

    def onto(self, event: GenerationEvent, first: bool) -> GenerationEvent:
        """The engine's event as the client gets it: the forced text before the first one's own,
        and the final stats counting the forced tokens as generated."""
        if first:
            event = replace(
                event, text=self.text + event.text, token_ids=self.tokens + event.token_ids
            )
        if event.stats is not None:
            event = replace(event, stats=self._counted(event.stats))
        return event

    def _counted(self, stats: GenerationStats) -> GenerationStats:
        prompt_tokens = stats.prompt_tokens - len(self.tokens)
        return replace(
            stats,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=min(stats.cached_prompt_tokens, prompt_tokens),
            completion_tokens=stats.completion_tokens + len(self.tokens),
            prefilled_tokens=len(self.tokens),
        )


def writes_what_it_may_not(tokens: list[int], text: str, request: EngineRequest) -> bool:
    """Whether the jumped tokens hold one that `logit_bias` bans (sampled, the grammar could not
    go on: the request fails) or text a stop string could end in."""
    bias = request.sampling.logit_bias
    return any(bias.get(token, 0) <= BANNED_BIAS for token in tokens) or _stop_may_cross(
        text, request.stop
    )


def _stop_may_cross(text: str, stop: list[str]) -> bool:
    """Whether a stop string could end inside `text` or begin in it and end after it: an
    engine that never samples the text would miss it."""
    return any(
        s and (s in text or any(text.endswith(s[:k]) for k in range(1, len(s)))) for s in stop
    )
