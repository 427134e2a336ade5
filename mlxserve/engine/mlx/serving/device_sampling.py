"""Tokens chosen on the device, and the decode step they let run ahead.

Two kinds of row get their token on the device, with nothing but the token id reaching the host:
- greedy rows with no penalty: the largest float32 logit after the logit bias, lowest id on ties,
  the very token the C sampler picks;
- sampled rows without a seed: the C sampler's distribution (logit bias, repeat penalty,
  temperature, top_k, min_p, top_p, in its order) drawn with MLX's random numbers. A seed promises
  the C sampler's own stream of tokens, so seeded rows stay on the host.
Their next step's graph is built from the still-lazy tokens: the step after computes while the
host detokenizes and delivers this one (docs/engines.md). Every other row keeps the C sampler.
"""

from __future__ import annotations

import mlx.core as mx

from mlxserve.engine.mlx.serving.sequence import Sequence
from mlxserve.sampling.params import SamplingParams

# A larger top_k is left to the C sampler, which avoids sorting that many candidates.
DEVICE_TOP_K = 256
DEVICE_WINDOW = 1024  # repeat-penalty windows up to this many tokens are gathered on the device
BANNED, FORCED = -100.0, 100.0  # the C sampler's bias limits: a token banned, or the choice forced


def samples_on_device(sample_on: str) -> bool:
    """`--sample-on`: auto is the device on a GPU (Metal or CUDA) and the host on MLX's CPU
    backend, where the C sampler is cheaper than MLX's kernels over the vocabulary (both
    measured: docs/engines.md)."""
    return sample_on == "device" or (sample_on == "auto" and mx.default_device() == mx.gpu)


def chosen_on_device(sequence: Sequence) -> bool:
    """Whether the row's token needs nothing the host holds (see the module's docstring)."""
    params = sequence.sampler.params
    if (
        sequence.constraint is not None
        or sequence.request.top_logprobs is not None
        or sequence.drafter is not None
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
        or any(bias >= FORCED for bias in params.logit_bias.values())
    ):
        return False
    windowed = _windowed(params)
    if params.is_greedy:
        return not windowed  # a penalty's division may round differently on a GPU
    if params.seed is not None or (windowed and not 0 < params.repeat_last_n <= DEVICE_WINDOW):
        return False
    return 0 < params.top_k <= DEVICE_TOP_K or (params.top_k == 0 and params.top_p >= 1.0)


def device_tokens(
    logits: mx.array, sequences: list[Sequence], read: mx.array | None, read_rows: list[bool]
) -> mx.array:
    """Each row's token, lazily; rows match `sequences`. `read` holds, for the rows marked in
    `read_rows`, the token this step read that the host has not seen: it ends their windows."""
    logits = biased(logits.astype(mx.float32), sequences)
    logits = penalized(logits, sequences, read, read_rows)
    params = [s.sampler.params for s in sequences]
    tokens = mx.argmax(logits, axis=-1).astype(mx.int32)
    every_token = [row for row, p in enumerate(params) if not p.is_greedy and p.top_k == 0]
    top_k = [row for row, p in enumerate(params) if not p.is_greedy and p.top_k > 0]
    for rows in (every_token, top_k):
        if rows:
            index = mx.array(rows)
            candidates, weights = candidate_weights(logits[index], [params[r] for r in rows])
            picked = mx.random.categorical(mx.log(weights), axis=-1)[:, None]
            drawn = mx.take_along_axis(candidates, picked, axis=-1)[:, 0].astype(mx.int32)
            tokens = tokens.at[index].add(drawn - tokens[index])  # those rows set to drawn
    return tokens


def candidate_weights(logits: mx.array, params: list[SamplingParams]) -> tuple[mx.array, mx.array]:
    """Per row, the token ids that can be drawn and their unnormalized weights (0 where
    filtered out), as the C sampler keeps them: the top_k, then weights at the temperature
    relative to the best, min_p against those, and top_p's nucleus measured against the top_k's
    whole mass. The rows all have a top_k, or none has (and none a top_p then)."""
    vocab = logits.shape[-1]
    ks = [min(p.top_k, vocab) for p in params]
    width = max(ks)
    if width == 0:  # every token a candidate, in id order
        candidates, values = mx.broadcast_to(mx.arange(vocab), logits.shape), logits
    else:
        top = mx.argpartition(-logits, kth=width - 1, axis=-1)[:, :width]
        order = mx.argsort(-mx.take_along_axis(logits, top, axis=-1), axis=-1)
        candidates = mx.take_along_axis(top, order, axis=-1)  # likeliest first
        values = mx.take_along_axis(logits, candidates, axis=-1)
        values = mx.where(mx.arange(width) < mx.array(ks)[:, None], values, -mx.inf)
    inverse_temperature = mx.array([1.0 / p.temperature for p in params])[:, None]
    best = mx.max(values, axis=-1, keepdims=True)
    weights = mx.exp((values - best) * inverse_temperature)
    total = mx.sum(weights, axis=-1, keepdims=True)
    weights = mx.where(weights >= mx.array([p.min_p for p in params])[:, None], weights, 0.0)
    if any(p.top_p < 1.0 for p in params):
        top_p = mx.array([p.top_p for p in params])[:, None]
        before = mx.cumsum(weights, axis=-1) - weights  # the mass of the likelier candidates
        weights = mx.where((top_p >= 1.0) | (before < top_p * total), weights, 0.0)
    return candidates, weights


def _windowed(params: SamplingParams) -> bool:
    return params.repeat_penalty != 1.0 and params.repeat_last_n != 0


def biased(logits: mx.array, sequences: list[Sequence]) -> mx.array:
    """The logits plus each row's bias, a bias at the lower limit banning the token."""
    rows, tokens, values = [], [], []
    for row, sequence in enumerate(sequences):
        for token, bias in sequence.sampler.params.logit_bias.items():
            rows.append(row)
            tokens.append(token)
            values.append(-float("inf") if bias <= BANNED else bias)
    if not rows:
        return logits
    where = (mx.array(rows), mx.array(tokens))
    return logits.at[where].add(mx.array(values, dtype=mx.float32))


def penalized(
    logits: mx.array, sequences: list[Sequence], read: mx.array | None, read_rows: list[bool]
) -> mx.array:
    """The repeat penalty over each row's window (the last tokens of its prompt and reply): a
    positive logit divided by it, a negative one multiplied. A token met twice in the window is
    penalized once, as min and max scatters apply it."""
    rows = [row for row, s in enumerate(sequences) if _windowed(s.sampler.params)]
    if not rows:
        return logits
    width = max(sequences[row].sampler.params.repeat_last_n for row in rows)
    windows = []
    for row in rows:
        sequence, unseen = sequences[row], read_rows[row]
        tail = _tail(sequence, sequence.sampler.params.repeat_last_n - unseen)
        # -1 marks padding, filled below with the row's last column (a token of its window)
        windows.append(tail + [-1] * (width - len(tail)) + [-1 if unseen else tail[-1]])
    window = mx.array(windows)
    last = window[:, -1]
    if any(read_rows[row] for row in rows):
        unseen = mx.array([read_rows[row] for row in rows])
        last = mx.where(unseen, read[mx.array(rows)], last)
    window = mx.where(window >= 0, window, last[:, None])
    index = mx.array(rows)[:, None]
    values = mx.take_along_axis(logits[mx.array(rows)], window, axis=-1)
    penalty = mx.array([sequences[row].sampler.params.repeat_penalty for row in rows])[:, None]
    adjusted = mx.where(values > 0, values / penalty, values * penalty)
    logits = logits.at[index, window].minimum(mx.where(penalty > 1, adjusted, mx.inf))
    return logits.at[index, window].maximum(mx.where(penalty < 1, adjusted, -mx.inf))


def _tail(sequence: Sequence, count: int) -> list[int]:
    """The last `count` tokens of the prompt and the reply that the host holds."""
    if count <= 0:
        return []
    generated = sequence.generated[-count:]
    missing = count - len(generated)
    return (sequence.prompt_tokens[-missing:] if missing > 0 else []) + generated


class ReadAhead:
    """Tokens chosen on the device whose step has not yet given them to their sequences: one per
    row of the batch (0 where a row has none). The next step reads them as its inputs before the
    host has seen them."""

    def __init__(self):
        self.tokens: mx.array | None = None  # lazy, one per batch row
        self.rows: list[bool] = []  # which rows hold a token not yet given to their sequence

    def __bool__(self) -> bool:
        return any(self.rows)

    def inputs(self, sequences: list[Sequence]) -> mx.array:
        """The step's input tokens: the lazy ones where a row has one, else its last token."""
        rows = zip(sequences, self.rows, strict=True)
        known = mx.array([0 if ahead else s.last_token for s, ahead in rows])
        if not self:
            return known
        return mx.where(mx.array(self.rows), self.tokens, known)

    def hold(self, tokens: mx.array, rows: list[int], batch: int) -> None:
        """Keep `tokens`, chosen for `rows` of a batch of `batch` rows, for the next step."""
        tokens = tokens.astype(mx.int32)
        if len(rows) != batch:
            tokens = mx.zeros((batch,), mx.int32).at[mx.array(rows)].add(tokens)
        self.tokens = tokens
        chosen = set(rows)
        self.rows = [row in chosen for row in range(batch)]

    def take(self) -> list[tuple[int, int]]:
        """(row, token) for every held token, waiting for them; nothing is held after."""
        rows = [row for row, ahead in enumerate(self.rows) if ahead]
        tokens = self.tokens.tolist() if rows else []
        self.rows = [False] * len(self.rows)
        return [(row, tokens[row]) for row in rows]

    def keep(self, kept: list[int]) -> None:
        """Only the batch rows `kept` stay, in that order."""
        self.rows = [self.rows[row] for row in kept]
        self.tokens = self.tokens[mx.array(kept)] if self and kept else None

    def extend(self, count: int) -> None:
        """`count` rows joined the batch, with no token held for them."""
        if self.tokens is not None and self:
            self.tokens = mx.concatenate([self.tokens, mx.zeros((count,), mx.int32)])
        self.rows += [False] * count

    def clear(self) -> None:
        self.tokens, self.rows = None, []
