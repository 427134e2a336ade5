"""Whisper's decoding rules and searches, on the host: each step's logits (a few rows of the
vocabulary) come back from MLX, Whisper's rules mask them, and beam search or sampling picks the
next tokens. The rules are those of OpenAI's Whisper paper and reference decoder: timestamps
come in pairs and never go back, text starts with a timestamp no later than a bound, and a
timestamp wins when timestamps together are likelier than any single text token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NEG_INF = -np.inf
# The model's next-token logits for each row, given each row's newest token and the row of the
# previous step it continues.
StepFn = Callable[[list[int], list[int]], np.ndarray]


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    no_timestamps: int
    no_speech: int

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1


@dataclass
class LogitRules:
    special: SpecialTokens
    suppress: list[int]  # never generated
    suppress_at_start: list[int]  # not as the first token (blank, end of text)
    timestamps: bool  # the prompt asked for timestamps (no <|notimestamps|> in it)
    max_initial_timestamp_index: int | None

    def logprobs(self, logits: np.ndarray, generated: list[int]) -> np.ndarray:
        """The row's log-probabilities after every rule, for the token after `generated`."""
        logits = logits.astype(np.float32, copy=True)
        logits[self.suppress] = NEG_INF
        if not generated:
            logits[self.suppress_at_start] = NEG_INF
        if self.timestamps:
            self._timestamp_rules(logits, generated)
        return _log_softmax(logits)

    def _timestamp_rules(self, logits: np.ndarray, generated: list[int]) -> None:
        begin, eot = self.special.timestamp_begin, self.special.eot
        logits[self.special.no_timestamps] = NEG_INF
        last = len(generated) >= 1 and generated[-1] >= begin
        before_last = len(generated) < 2 or generated[-2] >= begin
        if last:  # a pair is closed by a second timestamp; an opened one needs text or the end
            if before_last:
                logits[begin:] = NEG_INF
            else:
                logits[:eot] = NEG_INF
        stamps = [t for t in generated if t >= begin]
        if stamps:  # never back in time, and a segment is never empty
            floor = stamps[-1] if last and not before_last else stamps[-1] + 1
            logits[begin:floor] = NEG_INF
        if not generated:
            logits[:begin] = NEG_INF
            if self.max_initial_timestamp_index is not None:
                logits[begin + self.max_initial_timestamp_index + 1 :] = NEG_INF
        logprobs = _log_softmax(logits)
        if np.logaddexp.reduce(logprobs[begin:]) > logprobs[:begin].max():
            logits[:begin] = NEG_INF


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without the end-of-text token
    logprob: float  # summed, the end-of-text token's included when it was reached

    def score(self, length_penalty: float) -> float:
        return self.logprob / max(len(self.tokens), 1) ** length_penalty


def beam_search(
    step: StepFn,
    first_logits: np.ndarray,
    rules: LogitRules,
    beam_size: int,
    patience: float,
    max_new_tokens: int,
) -> list[Hypothesis]:
    """Hypotheses until `beam_size * patience` have finished, ranked as CTranslate2 ranks them:
    each step the `2 * beam_size` likeliest continuations of all beams are ranked; one of the
    first `beam_size` that ends the text (or is cut at the length limit) is a hypothesis, and
    the next unfinished continuation past them takes its place. A beam size of 1 is greedy."""
    eot = rules.special.eot
    wanted = max(round(beam_size * patience), 1)
    beams, finished = [([], 0.0)], []
    logits = first_logits
    for step_index in range(max_new_tokens):
        candidates = []
        for source, (tokens, total) in enumerate(beams):
            logprobs = rules.logprobs(logits[source], tokens)
            best = _top(logprobs, 2 * beam_size)
            candidates += [
                (total + float(logprobs[t]), [*tokens, int(t)], source)
                for t in best
                if np.isfinite(logprobs[t])
            ]
        candidates = sorted(candidates, key=lambda c: -c[0])[: 2 * beam_size]
        spares = (c for c in candidates[beam_size:] if c[1][-1] != eot)
        last_step = step_index == max_new_tokens - 1
        beams, sources = [], []
        for total, tokens, source in candidates[:beam_size]:
            if tokens[-1] == eot or last_step:
                ended = tokens[:-1] if tokens[-1] == eot else tokens
                finished.append(Hypothesis(ended, total))
                total, tokens, source = next(spares, (None, None, None))
            if tokens is not None:
                beams.append((tokens, total))
                sources.append(source)
        if last_step or len(finished) >= wanted or not beams:
            break
        logits = step([tokens[-1] for tokens, _ in beams], sources)
    return finished or [Hypothesis(tokens, total) for tokens, total in beams]


def sample(
    step: StepFn,
    first_logits: np.ndarray,
    rules: LogitRules,
    count: int,
    temperature: float,
    max_new_tokens: int,
    rng: np.random.Generator,
) -> list[Hypothesis]:
    """`count` hypotheses drawn independently at `temperature` from the rule-masked
    distribution; their log-probabilities are the untempered model's, as the ranking needs."""
    eot = rules.special.eot
    rows = [[] for _ in range(count)]
    totals = [0.0] * count
    done = [False] * count
    logits = np.repeat(first_logits[:1], count, axis=0)
    sources = [0] * count  # every row starts from the prompt's one row
    for _ in range(max_new_tokens):
        for row in range(count):
            if done[row]:
                continue
            logprobs = rules.logprobs(logits[row], rows[row])
            weights = np.exp((logprobs - logprobs.max()) / temperature)
            token = int(rng.choice(len(weights), p=weights / weights.sum()))
            totals[row] += float(logprobs[token])
            done[row] = token == eot
            rows[row] += [] if done[row] else [token]
        if all(done):
            break
        logits = step([row[-1] if row else eot for row in rows], sources)
        sources = list(range(count))
    return [Hypothesis(tokens, total) for tokens, total in zip(rows, totals, strict=True)]


def _top(values: np.ndarray, count: int) -> np.ndarray:
    """The indices of the `count` largest values, largest first (ties: lower index first)."""
    count = min(count, len(values))
    picked = np.argpartition(-values, count - 1)[:count]
    return picked[np.lexsort((picked, -values[picked]))]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max()
    return logits - top - np.log(np.exp(logits - top).sum())
